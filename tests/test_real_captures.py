"""Real captures: mixed sizes and orientations, large photos, bad files, unordered sets, view refinement.

Tests on ../shared/data (real video frames) skip with their reason where that folder is absent (a
user's clone has none); the rest make their own images.
"""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliev3r_ns.cli.process_data import ProcessImages
from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.geometry import intrinsics_from_fov, pixels_to_camera_rays
from reliev3r_ns.model import FFRM, ffrm_config
from reliev3r_ns.process.bundle import ViewRefineConfig
from reliev3r_ns.process.capture import read_rgb_reduced, scan_capture
from reliev3r_ns.process.matching import MatchingConfig, build_match_graph, visual_order
from reliev3r_ns.process.pipeline import CaptureConfig, process_capture
from reliev3r_ns.process.reconstruct import CanvasPlacement

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pi3_examples"
needs_shared = pytest.mark.skipif(not (SHARED / "valley" / "images").is_dir(),
                                  reason=f"{SHARED} is absent (the shared real image sets are not part of a user's clone)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return FFRM(ffrm_config("tiny")).save_checkpoint(tmp_path_factory.mktemp("ffrm") / "ffrm.pt", {"image_size": [96, 128]})


def textured(seed: int, size=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def valley_paths():
    return sorted((SHARED / "valley" / "images").glob("*.png"), key=lambda p: int(p.stem.split("_")[-1]))


# ----------------------------------------------------------------------------- sizes, orientations
def test_canvas_placement_maps_rays_back_to_each_images_own_pixels():
    canvas = (112, 224)
    K_canvas = intrinsics_from_fov(torch.tensor(1.0, dtype=torch.float64), canvas[1], canvas[0])
    for image_hw, fill in (((378, 672), True), ((672, 378), False), ((300, 300), False)):
        placement = CanvasPlacement.fit(image_hw, canvas, fill)
        assert placement.offset_x + placement.width <= canvas[1] and placement.offset_y + placement.height <= canvas[0]
        K_image = placement.intrinsics_to_image(K_canvas)
        uv = torch.tensor([[0.0, 0.0], [image_hw[1] - 1.0, image_hw[0] - 1.0], [100.0, 50.0]], dtype=torch.float64)
        # The same point of the picture, in canvas pixels (pixel centres at integers).
        uv_canvas = torch.stack([(uv[:, 0] + 0.5) * placement.scale_x - 0.5 + placement.offset_x,
                                 (uv[:, 1] + 0.5) * placement.scale_y - 0.5 + placement.offset_y], -1)
        assert torch.allclose(pixels_to_camera_rays(uv, K_image), pixels_to_camera_rays(uv_canvas, K_canvas), atol=1e-9)
    portrait = CanvasPlacement.fit((672, 378), canvas, fill=False)
    assert portrait.scale_x == pytest.approx(portrait.scale_y, rel=0.02)  # padded, not stretched


def test_mixed_sizes_and_orientations_round_trip_through_nerfstudio_with_per_frame_intrinsics(checkpoint, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(textured(0)).save(folder / "a_landscape.png")
    Image.fromarray(textured(1)).save(folder / "b_landscape.png")
    Image.fromarray(textured(2, (120, 90))).save(folder / "c_portrait.png")
    stored = Image.fromarray(textured(3, (72, 96)))  # stored landscape, shown portrait by its EXIF turn
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(folder / "d_exif.jpg", exif=exif)
    out = ProcessImages(data=folder, output_dir=tmp_path / "out", checkpoint=checkpoint, capture=CaptureConfig(place="all")).main()
    meta = json.loads((out / "transforms.json").read_text())
    frames = {Path(f["file_path"]).name: f for f in meta["frames"]}
    sizes = {meta["reliev3r"]["source_images"][k]: (f["w"], f["h"]) for k, f in enumerate(meta["frames"])}
    assert sizes == {"a_landscape.png": (128, 96), "b_landscape.png": (128, 96), "c_portrait.png": (90, 120), "d_exif.jpg": (72, 96)}
    for f in frames.values():
        assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(f)
        assert f["cx"] == pytest.approx(f["w"] / 2, abs=1.0) and f["cy"] == pytest.approx(f["h"] / 2, abs=1.0)
        assert Image.open(out / f["file_path"]).size == (f["w"], f["h"])  # stored as the FFRM saw it (EXIF applied)
    outputs = NerfstudioDataParserConfig(data=out, load_3D_points=False, train_split_fraction=1.0).setup().get_dataparser_outputs("train")
    cameras = outputs.cameras
    widths = sorted(int(w) for w in cameras.width.flatten())
    assert widths == [72, 90, 128, 128]
    for k in range(len(cameras)):  # nerfstudio's per-frame intrinsics are the ones we wrote
        name = outputs.image_filenames[k].name
        assert float(cameras.fx[k]) == pytest.approx(frames[name]["fl_x"]) and int(cameras.height[k]) == frames[name]["h"]


# ------------------------------------------------------------------------------------ large photos
def test_large_photos_decode_at_a_bounded_size_and_memory(tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(textured(0, (4000, 6000))).save(big, quality=90)  # 24 MP
    small = read_rgb_reduced(big, 1024)
    assert max(small.shape[:2]) == 1024 and small.shape[1] / small.shape[0] == pytest.approx(1.5, rel=0.01)
    # Peak resident memory of the decode alone: Linux resets the high-water mark on "5" > clear_refs
    # (after the imports, whose own peak would hide the decode's).
    probe = ("import sys; from reliev3r_ns.process.capture import read_rgb_reduced\n"
             "def hwm(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
             "open('/proc/self/clear_refs', 'w').write('5'); before = hwm()\n"
             "read_rgb_reduced(sys.argv[1], None if sys.argv[2] == 'full' else 1024); print(hwm() - before)")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    grown = {mode: int(subprocess.run([sys.executable, "-c", probe, str(big), mode], capture_output=True, text=True, check=True).stdout)
             for mode in ("full", "reduced")}
    # A full 24 MP decode holds 72 MB of pixels; JPEG's DCT scaling never builds them.
    assert grown["full"] > 60_000 and grown["reduced"] < grown["full"] / 4, grown


# --------------------------------------------------------------------------------------- bad files
def test_scan_names_bad_files_duplicates_and_conversions(tmp_path):
    rgb = textured(0)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    shutil.copyfile(tmp_path / "a.jpg", tmp_path / "a_copy.jpg")
    full = (tmp_path / "a.jpg").read_bytes()
    Image.fromarray(textured(1, (400, 600))).save(tmp_path / "b_truncated.jpg", quality=95)
    (tmp_path / "b_truncated.jpg").write_bytes((tmp_path / "b_truncated.jpg").read_bytes()[:3000])
    (tmp_path / "c_not_an_image.png").write_bytes(b"hello")
    (tmp_path / "notes.txt").write_text("taken on a Sunday")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 256)).save(tmp_path / "grey16.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    capture = scan_capture(list(tmp_path.iterdir()))
    assert capture.ignored == ["notes.txt"]
    assert capture.left_out["a_copy.jpg"] == "exact duplicate of a.jpg"
    assert "truncated" in capture.left_out["b_truncated.jpg"] and "unreadable" in capture.left_out["c_not_an_image.png"]
    assert set(capture.notes) == {"grey.png", "grey16.png", "rgba.png", "palette.png", "cmyk.jpg"}
    assert "16-bit" in capture.notes["grey16.png"] and "CMYK" in capture.notes["cmyk.jpg"]
    for image in capture.images:
        pixels = read_rgb_reduced(image.path, 64)
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
    assert (tmp_path / "a.jpg").read_bytes() == full


def test_processing_leaves_bad_files_out_and_says_so_in_the_dataset(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(textured(k)).save(folder / f"{k}.png")
    shutil.copyfile(folder / "0.png", folder / "0_again.png")
    (folder / "3.png").write_bytes(b"\x89PNG truncated")
    out = ProcessImages(data=folder, output_dir=tmp_path / "out", checkpoint=checkpoint, capture=CaptureConfig(place="all")).main()
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["reliev3r"]["source_images"] == ["0.png", "1.png", "2.png"]
    assert set(meta["reliev3r"]["left_out"]) == {"0_again.png", "3.png"}


# ---------------------------------------------------------------------------------- real sequences
@needs_shared
def test_overlap_grouping_orders_a_shuffled_sequence_and_leaves_out_an_unrelated_view(tmp_path):
    paths = valley_paths()
    shuffled = paths[:]
    random.Random(3).shuffle(shuffled)
    intruder = SHARED / "room" / "images" / "6.png"  # a blue wall: shares nothing with the valley
    images = [read_rgb_reduced(p, 1024) for p in shuffled + [intruder]]
    graph = build_match_graph(lambda v: images[v], [im.shape[:2] for im in images], MatchingConfig())
    weak = graph.weakly_matched(30)
    assert list(weak) == [len(shuffled)]  # only the intruder
    main = graph.without(list(weak)).components()[0]
    assert sorted(main) == list(range(len(shuffled)))
    order = visual_order(graph, main)
    neighbours = graph.neighbours()
    assert all(neighbours[a].get(b, 0) >= 30 for a, b in zip(order, order[1:]))  # consecutive views see each other
    frame_number = [int(shuffled[v].stem.split("_")[-1]) for v in order]
    steps = np.abs(np.diff(frame_number))
    assert np.median(steps) <= 2, frame_number  # about the video's own order, recovered from the pixels


@needs_shared
def test_view_refinement_lowers_the_reprojection_error_on_real_frames(checkpoint, tmp_path):
    folder = tmp_path / "valley"
    folder.mkdir()
    for p in valley_paths()[:6]:
        shutil.copyfile(p, folder / p.name)
    shutil.copyfile(SHARED / "room" / "images" / "6.png", folder / "unrelated.png")
    processed = process_capture(FFRM.from_checkpoint(checkpoint), folder, config=CaptureConfig(refine_views=ViewRefineConfig(steps=150)))
    r = processed.refinement
    assert "unrelated.png" in processed.left_out and processed.reconstruction.num_views == 6
    assert r.median_error_px_after < 0.25 * r.median_error_px_before and r.median_error_px_after < 1.0, r
    assert r.loss_after < r.loss_before
    with pytest.raises(SceneFormatError, match="no two images overlap"):
        lone = tmp_path / "lone"
        lone.mkdir()
        shutil.copyfile(valley_paths()[0], lone / "a.png")
        shutil.copyfile(SHARED / "room" / "images" / "6.png", lone / "b.png")
        process_capture(FFRM.from_checkpoint(checkpoint), lone)


@needs_shared
def test_the_focal_search_finds_the_rooms_focal_length_where_a_single_start_stays_wrong(checkpoint, tmp_path):
    # The three room views SIFT links (as pycolmap registers them): short baselines, where the
    # refinement keeps a focal length near its start. COLMAP's 1.2 x side start (a 45 degree view)
    # stays far from the render's 81 degrees; the search's best reprojection finds it.
    reference = np.load(SHARED / "room" / "reference.npz")
    true_focal = float(reference["intrinsics"][0, 0, 0])
    folder = tmp_path / "room"
    folder.mkdir()
    for name in ("0.png", "1.png", "2.png"):
        shutil.copyfile(SHARED / "room" / "images" / name, folder / name)
    model = FFRM.from_checkpoint(checkpoint)
    prior = process_capture(model, folder, config=CaptureConfig(refine_views=ViewRefineConfig(focal_init="prior")))
    search = process_capture(model, folder, config=CaptureConfig(refine_views=ViewRefineConfig(focal_init="search")))
    focal_prior = float(prior.reconstruction.intrinsics[0, 0, 0])
    focal_search = float(search.reconstruction.intrinsics[0, 0, 0])
    assert abs(focal_prior / true_focal - 1) > 0.3, focal_prior
    assert abs(focal_search / true_focal - 1) < 0.1, (focal_search, search.refinement.focal_trials)
    assert search.refinement.median_error_px_after < prior.refinement.median_error_px_after
    assert search.refinement.focal_start in search.refinement.focal_trials and len(search.refinement.focal_trials) == 7
    with pytest.raises(ValueError, match="focal_init='narrow'"):
        ViewRefineConfig(focal_init="narrow").validate()


@needs_shared
def test_a_mixed_size_folder_of_real_photos_gives_a_dataset_nerfstudio_reads(checkpoint, tmp_path):
    from reliev3r_ns.process.dataparser import PlyfileNerfstudioDataParserConfig

    folder = tmp_path / "holiday"
    folder.mkdir()
    paths = valley_paths()[:7]
    for k, p in enumerate(paths):
        image = Image.open(p).convert("RGB")
        if k in (2, 3):
            image = image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.LANCZOS)  # a smaller camera
        if k == 4:
            image = image.crop((150, 0, 150 + 284, 378))  # portrait crop
        if k == 5:  # stored turned, shown upright by its EXIF orientation, as phones write them
            exif = image.getexif()
            exif[0x0112] = 8
            image.rotate(-90, expand=True).save(folder / f"IMG_{k}.jpg", quality=92, exif=exif)
            continue
        image.save(folder / f"IMG_{k}.jpg", quality=92)
    out = ProcessImages(data=folder, output_dir=tmp_path / "out", checkpoint=checkpoint).main()
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) >= 6, meta["reliev3r"]["left_out"]
    sizes = {(f["w"], f["h"]) for f in meta["frames"]}
    assert (672, 378) in sizes and (403, 226) in sizes
    outputs = PlyfileNerfstudioDataParserConfig(data=out, train_split_fraction=1.0).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == len(meta["frames"]) and len(outputs.metadata["points3D_xyz"]) > 100
    assert meta["reliev3r"]["view_refinement"]["median_match_error_px_after"] < 1.5


def test_the_focal_search_takes_a_start_only_where_pixels_and_angles_both_improve(monkeypatch):
    # The selection rule alone, on stand-in trial outcomes (start -> (median px, median angle)).
    import math
    from types import SimpleNamespace

    from reliev3r_ns.process import bundle
    from reliev3r_ns.process.matching import MatchGraph, PairMatches

    graph = MatchGraph([np.zeros((1, 2), np.float32)] * 2, [PairMatches(0, 1, np.zeros(1, int), np.zeros(1, int), np.ones(1))], 2)
    sizes = [(100, 200), (100, 200)]  # prior: 1.2 x 200 = 240 px

    def pick(outcomes, final_px=None):
        def fake(graph, image_sizes, c2w, K, teacher, config, *rest):
            px, angle = outcomes.get(config.focal_init, (9.0, 9.0))
            if config.steps == 400:  # the full run
                px = final_px.get(config.focal_init, px) if final_px else px
            return SimpleNamespace(median_error_px_after=px, median_angle_after=math.radians(angle), focal_start=config.focal_init,
                                   focal_trials=None)
        monkeypatch.setattr(bundle, "_refine_views", fake)
        return bundle.refine_views(graph, sizes, np.eye(4)[None].repeat(2, 0), np.eye(3)[None].repeat(2, 0), [np.ones((4, 4))] * 2,
                                   bundle.ViewRefineConfig(steps=400)).focal_start

    prior = {"240": (1.0, 0.10)}
    assert pick({**prior, "100": (0.5, 0.05)}) == "100"  # better in both: taken
    assert pick({**prior, "100": (0.5, 0.12)}) == "240"  # smaller pixels only (a shorter focal length): not taken
    assert pick({**prior, "440": (1.2, 0.05)}) == "240"  # smaller angles only (a longer one): not taken
    assert pick({**prior, "100": (0.9, 0.09)}) == "240"  # within the margin: the prior stays
    assert pick({**prior, "100": (0.5, 0.05), "130": (0.4, 0.08)}) == "130"  # of those better in both, the fewest pixels
    assert pick({**prior, "100": (0.5, 0.05)}, final_px={"100": 1.5}) == "240"  # its full run ends worse: the prior's run
