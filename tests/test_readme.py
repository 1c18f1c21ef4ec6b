"""README stays true: the configuration table is the one config.py describes."""

from __future__ import annotations

from pathlib import Path

from comfy_serverless.config import DEFAULT_TEST_PAYLOAD, Config
from tests.support.frontends import newest_frontend_version, pinned_frontend

README = Path(__file__).resolve().parent.parent / "README.md"


def config_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in Config.reference():
        shown = "the packaged `test_server.json`" if default == f'"{DEFAULT_TEST_PAYLOAD}"' else f"`{default}`"
        rows.append(f"| `{key}` | {shown} | {meaning} |")
    return "\n".join(rows)


def test_readme_configuration_table_matches_config() -> None:
    text = README.read_text()
    start = text.index("<!-- config-table:start -->\n") + len("<!-- config-table:start -->\n")
    end = text.index("<!-- config-table:end -->")
    assert text[start:end].strip() == config_table(), "regenerate README's table from Config.reference()"


def test_readme_leads_with_the_two_commands() -> None:
    text = README.read_text()
    quickstart = text[text.index("## Quickstart"):]
    assert quickstart.index("make run") < quickstart.index("make test") < quickstart.index("##", 3)


def test_readme_states_the_tested_frontend_range() -> None:
    """The frontend range README promises is the one the conversion tests run: the two pins."""
    text = " ".join(README.read_text().split())
    assert (f"Tested range: `comfyui-frontend-package` {pinned_frontend().version} (pinned) to "
            f"{newest_frontend_version()};") in text
