"""One log format for every i24net process (i24net.config.logsetup), set up in one place."""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
from pathlib import Path

from i24net.config.logsetup import LOG_FORMAT, file_logger

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\S+) (DEBUG|INFO|WARNING|ERROR) (.*)$")


def test_a_process_logs_the_format_and_quiets_chatty_libraries() -> None:
    code = ("import logging\n"
            "from i24net.config.logsetup import CHATTY, configure_logging\n"
            "configure_logging('info', quiet=CHATTY)\n"
            "logging.getLogger('i24net.router-1').info('shard %d of %d', 1, 2)\n"
            "logging.getLogger('amqtt').info('every packet')\n"
            "logging.getLogger('amqtt').warning('worth seeing')\n"
            "logging.getLogger('i24net.router-1').debug('below the level')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert [LINE.match(ln).groups() for ln in lines] == [  # type: ignore[union-attr]
        ("i24net.router-1", "INFO", "shard 1 of 2"), ("amqtt", "WARNING", "worth seeing")]


def test_a_file_logger_writes_the_same_format_to_its_file_only(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    log = file_logger(path, "i24net.test-logsetup")
    try:
        log.info("written %s", "here")
        file_logger(path, "i24net.test-logsetup").warning("again")  # replaces the handler
        assert not log.propagate
        for h in log.handlers:
            h.flush()
        lines = path.read_text().splitlines()
        assert [LINE.match(ln).groups() for ln in lines] == [  # type: ignore[union-attr]
            ("i24net.test-logsetup", "INFO", "written here"),
            ("i24net.test-logsetup", "WARNING", "again")]
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


def test_no_other_module_sets_up_logging_or_a_format() -> None:
    """basicConfig and Formatter are called in i24net/config/logsetup.py only."""
    found = []
    for path in sorted((ROOT / "i24net").rglob("*.py")):
        if path.name == "logsetup.py" and path.parent.name == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("basicConfig", "Formatter", "dictConfig"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
    assert not found, found
    assert logging.Formatter(LOG_FORMAT).format(
        logging.makeLogRecord({"name": "n", "levelname": "INFO", "msg": "m"})).endswith(" n INFO m")
