"""The README's promise: CI runs exactly the README's test command, and its main command trains."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart)


def test_quickstart_has_exactly_two_commands_train_then_test():
    train, test = quickstart_commands()
    assert "ppo-np train CartPole-v1" in train
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert quickstart_commands()[1] in ci_lines


def test_every_column_of_the_run_directory_is_documented():
    from ppo_np.rundir import GRADIENT_FIELDS, METRIC_FIELDS

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The run directory", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| ([^|]+?) \|", section, re.M))
    names = {name.strip("` ") for cell in documented for name in cell.split(",")}
    assert set(METRIC_FIELDS) | set(GRADIENT_FIELDS) <= names
