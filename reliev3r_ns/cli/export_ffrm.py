"""reliev3r-export-ffrm: write the FFRM of an ``ns-train reliev3r`` run to a standalone checkpoint.

    reliev3r-export-ffrm --load-config outputs/.../config.yml --output ffrm.pt

The file loads without nerfstudio: ``reliev3r_ns.model.load_ffrm("ffrm.pt")`` (our network or a fine-tuned pi3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reliev3r_ns.cli import run_cli


@dataclass
class ExportFFRM:
    load_config: Path
    """config.yml of the training run (its latest checkpoint is used)."""
    output: Path = Path("ffrm.pt")

    def main(self) -> Path:
        from nerfstudio.utils.eval_utils import eval_setup

        if not self.load_config.is_file():
            raise FileNotFoundError(f"{self.load_config}: no such config; give the config.yml that `ns-train reliev3r` wrote")
        config, pipeline, checkpoint_path, step = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        if not hasattr(pipeline, "export_ffrm"):
            raise ValueError(f"{self.load_config}: method {config.method_name!r} is not a reliev3r method")
        extra = {"method": config.method_name, "step": int(step), "source_checkpoint": str(checkpoint_path),
                 "supervision": model.config.loss.supervision}
        path = pipeline.export_ffrm(self.output, extra)
        print(f"wrote {path} ({model.ffrm.num_parameters() / 1e6:.1f} M parameters, step {step})")
        return path


def entrypoint() -> None:
    run_cli(ExportFFRM, __doc__, (FileNotFoundError, ValueError))


if __name__ == "__main__":
    entrypoint()
