"""Shared by the training and viewer tests: small synthetic data and a Trainer built the way ns-train builds it."""

import copy
from pathlib import Path

TRAIN_SCENE = dict(width=128, height=96, num_views=8, supersample=1, texture_size=256)


def make_small_data(root: Path) -> Path:
    """4 training and 2 held-out synthetic scenes of 8 views at 128 x 96."""
    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    config = SyntheticSceneConfig(**TRAIN_SCENE)
    generate_dataset(root / "train", 4, seed=1, config=config, show_progress=False)
    generate_dataset(root / "eval", 2, seed=2, config=config, show_progress=False)
    return root


def make_trainer(small_data: Path, tmp_path: Path, iterations: int, method: str = "reliev3r", lr: float = 3e-4, vis: str = "tensorboard", pipeline=None, viewer=None,
                 model=None, local_rank: int = 0, world_size: int = 1, steps_per_log: int = 10, seed: int = 42, load_dir=None, **datamanager):
    from nerfstudio.scripts.train import _set_random_seed

    from reliev3r_ns.method_configs.reliev3r import reliev3r_method, reliev3r_supervised_method

    config = copy.deepcopy((reliev3r_method if method == "reliev3r" else reliev3r_supervised_method).config)
    config.output_dir = tmp_path / "outputs"
    config.max_num_iterations = iterations
    config.steps_per_save = iterations
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.machine.device_type = "cpu"
    config.machine.seed = seed
    config.vis = vis
    config.logging.steps_per_log = steps_per_log
    for key, value in (pipeline or {}).items():
        setattr(config.pipeline, key, value)
    for key, value in (viewer or {}).items():
        setattr(config.viewer, key, value)
    for key, value in (model or {}).items():
        setattr(config.pipeline.model, key, value)
    dm = config.pipeline.datamanager
    # Labels are content-addressed, so one cache per data folder serves every test that trains on it.
    dm.data, dm.eval_data, dm.label_cache = small_data / "train", small_data / "eval", small_data / "label_cache"
    dm.labels.simulated_matches.stride = 4
    for key, value in datamanager.items():
        setattr(dm, key, value)
    config.optimizers["ffrm"]["scheduler"].max_steps = iterations
    config.optimizers["ffrm"]["scheduler"].warm_up_end = min(100, iterations // 10)
    config.optimizers["ffrm"]["optimizer"].lr = lr
    config.load_dir = load_dir  # ns-train --load-dir: Trainer.setup loads the latest checkpoint there
    config.set_timestamp()
    config.save_config()  # what ns-train does before training
    # ns-train seeds the global RNGs before building the model (its train_loop); without it the
    # initial weights depend on what ran before in the process.
    _set_random_seed(seed + local_rank)
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    return trainer


def record_losses(trainer):
    losses = []
    original = trainer.pipeline.get_train_loss_dict

    def wrapped(step):
        outputs, loss_dict, metrics = original(step)
        losses.append(float(sum(loss_dict.values())))
        return outputs, loss_dict, metrics

    trainer.pipeline.get_train_loss_dict = wrapped
    return losses


def ddp_worker(rank: int, world_size: int, init_file: str, data: Path, out: Path, iterations: int) -> None:
    """One process of a CPU (gloo) DDP run through nerfstudio's Trainer, set up the way ns-train's
    distributed worker sets it up; writes the final FFRM weights and the clips it trained on."""
    import torch
    import torch.distributed as dist
    from nerfstudio.utils import comms

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    comms.LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    try:
        trainer = make_trainer(data, out / f"rank{rank}", iterations, local_rank=rank, world_size=world_size, clips_per_batch=1, max_views=3)
        clips = []
        original = trainer.pipeline.datamanager.next_train

        def recording(step):
            batch, same = original(step)
            clips.append((tuple(batch["scene_names"]), batch["images"].sum().item()))
            return batch, same

        trainer.pipeline.datamanager.next_train = recording
        trainer.train()
        weights = {k: v.detach().clone() for k, v in trainer.pipeline.model.ffrm.state_dict().items()}
        torch.save({"weights": weights, "clips": clips}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
