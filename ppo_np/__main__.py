import sys

from ppo_np.cli import main

sys.exit(main())
