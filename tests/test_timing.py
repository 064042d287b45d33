"""PhaseTimer: each block adds its wall time to its phase, blocks nest, and a block that raises still counts."""
import time

import pytest

from ppo_np.timing import PhaseTimer


def test_blocks_accumulate_into_the_shared_dict_and_nest():
    times = {"env_step": 1.0}                                     # filled by someone else too
    timer = PhaseTimer(times)
    with timer("optimizer"):
        with timer("minibatch_fwd_bwd"):
            time.sleep(0.01)
        time.sleep(0.01)
    with timer("optimizer"):
        pass
    assert times["env_step"] == 1.0
    assert times["minibatch_fwd_bwd"] >= 0.01 and times["optimizer"] >= times["minibatch_fwd_bwd"] + 0.01
    with pytest.raises(KeyError):
        with timer("advantages"):
            raise KeyError("a step that fails")
    assert times["advantages"] >= 0.0
