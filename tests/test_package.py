"""The package as a user meets it: cheap import, nerfstudio discovers the method, CLIs answer --help."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_import_is_light():
    code = (
        "import sys, reliev3r_ns, reliev3r_ns.geometry, reliev3r_ns.data.synthetic, reliev3r_ns.data.scene_io\n"
        "heavy = [m for m in ('nerfstudio', 'matplotlib', 'pycolmap', 'cv2', 'viser') if m in sys.modules]\n"
        "print(heavy)"
    )
    result = run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nerfstudio_discovers_reliev3r():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert "reliev3r" in methods
    assert methods["reliev3r"].method_name == "reliev3r"


def test_ns_train_help_lists_reliev3r():
    result = subprocess.run(["ns-train", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "reliev3r" in result.stdout


def test_synthetic_cli_generates_and_reports_bad_input(tmp_path):
    args = ["-m", "reliev3r_ns.cli.synthetic", "generate", "--output-dir", str(tmp_path / "d"), "--num-scenes", "1",
            "--scene.width", "32", "--scene.height", "24", "--scene.num-views", "3", "--scene.supersample", "1"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d/scene_00000/transforms.json").is_file()
    assert (tmp_path / "d/preview.png").stat().st_size > 1000
    assert json.loads((tmp_path / "d/dataset.json").read_text())["config"]["num_views"] == 3
    clash = run(*args[:-2], "--scene.supersample", "2")
    assert clash.returncode == 2 and "different version / seed / config" in clash.stderr
    assert run("-m", "reliev3r_ns.cli.synthetic", "generate", "--help").returncode == 0


def test_process_and_eval_clis_answer_help_and_report_bad_input_on_stderr(tmp_path):
    for module, sub in (("reliev3r_ns.cli.process_data", ["images"]), ("reliev3r_ns.cli.process_data", ["video"]), ("reliev3r_ns.cli.eval", [])):
        assert run("-m", module, *sub, "--help").returncode == 0
    (tmp_path / "empty").mkdir()
    missing = run("-m", "reliev3r_ns.cli.process_data", "images", "--data", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"),
                  "--checkpoint", str(tmp_path / "none.pt"))
    assert missing.returncode == 2 and "error:" in missing.stderr and "ns-train reliev3r" in missing.stderr
    empty = run("-m", "reliev3r_ns.cli.process_data", "images", "--data", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"))
    assert empty.returncode == 2 and "empty: no images found" in empty.stderr.replace("\n", "")
    assert "using the bundled tiny FFRM" in empty.stderr.replace("\n", " ")  # no --checkpoint: said, not silent
    assert not (tmp_path / "out").exists()
    names = run("-m", "reliev3r_ns.cli.eval", "--prediction", str(tmp_path / "empty"), "--reference", str(tmp_path / "empty"))
    assert names.returncode == 2 and f"{tmp_path / 'empty'}: no transforms.json" in names.stderr.replace("\n", "")


def test_run_cli_prints_user_errors_verbatim_and_exits_2(capsys, monkeypatch):
    from dataclasses import dataclass

    from reliev3r_ns.cli import run_cli

    @dataclass
    class Broken:
        def main(self):
            raise ValueError("images ['a.png', 'b.png'] have [bold]different[/bold] sizes")

    monkeypatch.setattr(sys, "argv", ["broken"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(Broken, "a command that fails", (ValueError,))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: images ['a.png', 'b.png'] have [bold]different[/bold] sizes\n"
    with pytest.raises(ValueError):  # not in the given user errors: the traceback stays
        run_cli(Broken, "", (KeyError,))


def test_every_subpackage_is_listed_for_installation():
    """A wheel holds only the packages pyproject lists: a new subpackage left out imports here (editable) but not there."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "reliev3r_ns").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
