"""Every command's ``--help`` ends with an example that the parser accepts."""

import contextlib
import io
import shlex

import pytest

from pyro_mixup.cli import EXAMPLES, build_parser, main, subcommands

COMMANDS = [words for words, _ in subcommands(build_parser())]


def test_every_command_has_an_example():
    assert set(COMMANDS) == set(EXAMPLES)


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "pyro-mixup")
def test_help_ends_with_a_runnable_example(words):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    assert stop.value.code == 0
    last = out.getvalue().rstrip().splitlines()[-1].strip()
    assert last == EXAMPLES[words]
    argv = shlex.split(last)
    assert argv[0] == "pyro-mixup"
    args = build_parser().parse_args(argv[1:])  # the example parses
    # and it runs the command it documents (a group's example runs one of its subcommands)
    ran = [args.command] + ([args.bench] if getattr(args, "bench", None) else [])
    assert tuple(ran[: len(words)]) == words


def test_the_pool_demo_example_runs(capsys):
    assert main(shlex.split(EXAMPLES[("pool-demo",)])[1:]) == 0
    assert "3.59" in capsys.readouterr().out
