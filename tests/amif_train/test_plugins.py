"""Sub-commands from entry points: the demo's are registered, a plugin that fails to load is named and skipped."""

from __future__ import annotations

from importlib.metadata import EntryPoint

from amif_train import cli, plugins


def test_demo_commands_come_from_the_entry_points():
    parser = cli.build_parser(cli._extra_commands())
    args = parser.parse_args(["demo", "--out", "x", "--quick"])
    assert args.quick and args.out == "x" and callable(args.func)
    args = parser.parse_args(["data", "demo", "--out", "d", "--scale", "0.5"])
    assert args.scale == 0.5 and args.func.__module__ == "amif_demo.cli"


def test_a_broken_plugin_is_reported_in_one_line_and_skipped(monkeypatch, capsys):
    good = EntryPoint("good", "amif_demo.cli:add_demo", plugins.COMMANDS)
    bad = EntryPoint("broken", "amif_no_such_module:add", plugins.COMMANDS)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [bad, good] if group == plugins.COMMANDS else [])
    found = plugins.plugin_commands(plugins.COMMANDS)
    assert [f.__name__ for f in found] == ["add_demo"]
    err = capsys.readouterr().err.strip()
    assert err.startswith("amif: warning: command 'broken' (amif_no_such_module:add) could not be loaded: ")
    assert len(err.splitlines()) == 1
    assert plugins.plugin_commands(plugins.DATA_COMMANDS) == []
