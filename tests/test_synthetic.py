"""The embedded benchmark generator: determinism, label sets, long tail, layouts, a measurable shift, the
camera's class-conditional appearance (pipeline/synthetic/appearance.py) and the normalisation-gap harness."""

import numpy as np
import png
import pytest
from PIL import Image

from pipeline.constants import CITYSCAPES_ID_OF_TRAIN_ID, CITYSCAPES_IGNORED_IDS, CITYSCAPES_LUT, SYNTHIA_LUT
from pipeline.data.readers import list_samples, load_sample
from pipeline.synthetic.samples import render_scene
from pipeline.synthetic.writers import write_cityscapes_sample, write_gta5_sample, write_synthia_sample

SIZE = (96, 192)


def train_ids(sample, domain):
    return (SYNTHIA_LUT if domain == "synthia" else CITYSCAPES_LUT)[sample.label]


@pytest.fixture(scope="module")
def class_stats():
    """Pixel shares and image counts per train id over 60 scenes of each domain."""
    stats = {}
    for domain in ("gta5", "synthia", "cityscapes"):
        pixels, images = np.zeros(256), np.zeros(19)
        for index in range(60):
            counts = np.bincount(
                train_ids(render_scene(domain, index, 0, *SIZE, city="c"), domain).ravel(), minlength=256
            )
            pixels += counts
            images += counts[:19] > 0
        stats[domain] = (pixels[:19] / pixels.sum(), images)
    return stats


def test_deterministic_in_arguments():
    a = render_scene("cityscapes", 3, 7, *SIZE, city="x")
    b = render_scene("cityscapes", 3, 7, *SIZE, city="x")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.image, render_scene("cityscapes", 4, 7, *SIZE, city="x").image)
    assert not np.array_equal(a.image, render_scene("cityscapes", 3, 8, *SIZE, city="x").image)


def test_label_ids_come_from_each_domains_table():
    allowed_cityscapes = set(CITYSCAPES_ID_OF_TRAIN_ID) | set(CITYSCAPES_IGNORED_IDS.values())
    for domain in ("gta5", "cityscapes"):
        sample = render_scene(domain, 0, 0, *SIZE)
        assert sample.label.dtype == np.uint8 and set(np.unique(sample.label)) <= allowed_cityscapes
    synthia = render_scene("synthia", 0, 0, *SIZE)
    assert synthia.label.dtype == np.uint16 and int(synthia.label.max()) <= 22
    assert synthia.image.shape == (*SIZE, 3) and synthia.image.dtype == np.uint8


def test_all_classes_appear_in_a_long_tail(class_stats):
    shares, images = class_stats["cityscapes"]
    assert (images > 0).all(), f"classes never rendered: {np.flatnonzero(images == 0)}"
    top = set(np.argsort(shares)[::-1][:6])
    assert {0, 2, 8, 10} <= top  # road, building, vegetation, sky among the most frequent
    for rare in (12, 16, 17):  # rider, train, motorcycle
        assert shares[rare] < 0.02


def test_synthia_lacks_terrain_truck_train(class_stats):
    _, images = class_stats["synthia"]
    assert images[9] == images[14] == images[16] == 0
    assert (np.delete(images, [9, 14, 16]) > 0).all()


def test_domains_differ_in_colour_statistics():
    def statistics(domain):
        images = [render_scene(domain, index, 0, *SIZE).image.astype(np.float32) for index in range(8)]
        saturation = np.mean([(image.max(axis=2) - image.min(axis=2)).mean() for image in images])
        return saturation, np.mean([image.reshape(-1, 3).mean(axis=0) for image in images], axis=0)

    game_saturation, game_colour = statistics("gta5")
    camera_saturation, camera_colour = statistics("cityscapes")
    assert game_saturation > 1.5 * camera_saturation
    assert np.linalg.norm(game_colour - camera_colour) > 10


def test_writers_produce_the_real_layouts(tmp_path):
    gta = render_scene("gta5", 0, 0, *SIZE)
    write_gta5_sample(tmp_path / "gta5", 0, gta)
    label = Image.open(tmp_path / "gta5" / "labels" / "00001.png")
    assert label.mode == "P"
    np.testing.assert_array_equal(np.asarray(label), gta.label)

    synthia = render_scene("synthia", 0, 0, *SIZE)
    write_synthia_sample(tmp_path / "synthia", 0, synthia)
    width, height, rows, info = png.Reader(
        filename=str(tmp_path / "synthia" / "GT" / "LABELS" / "0000000.png")
    ).asDirect()
    pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, 3)
    assert info["bitdepth"] == 16
    np.testing.assert_array_equal(pixels[..., 0], synthia.label)
    np.testing.assert_array_equal(pixels[..., 1], synthia.instance)

    city = render_scene("cityscapes", 0, 0, *SIZE, city="bonn")
    write_cityscapes_sample(tmp_path / "cityscapes", "val", "bonn", 0, city)
    ref = list_samples("cityscapes", tmp_path / "cityscapes", "val")[0]
    assert ref.id == "bonn_000000_000000"
    image, ids = load_sample(ref)
    np.testing.assert_array_equal(image, city.image)
    np.testing.assert_array_equal(ids, CITYSCAPES_LUT[city.label])
    assert not list(tmp_path.rglob("*.tmp"))


def test_gta5_label_palette_is_the_cityscapes_one(tmp_path):
    """The palette of GTA5 label PNGs holds the official Cityscapes colour of every label id."""
    from cityscapesscripts.helpers.labels import labels

    from pipeline.synthetic.labels import CITYSCAPES_LABEL_COLORS

    official = {label.id: label.color for label in labels if 0 <= label.id <= 33}
    assert {i: tuple(c) for i, c in enumerate(CITYSCAPES_LABEL_COLORS)} == official
    write_gta5_sample(tmp_path, 4, render_scene("gta5", 4, 0, *SIZE))
    palette = Image.open(tmp_path / "labels" / "00005.png").getpalette()
    assert [tuple(palette[3 * i : 3 * i + 3]) for i in range(34)] == [official[i] for i in range(34)]


def test_cityscapes_instance_ids_follow_gtfine(tmp_path):
    """instanceIds: label_id·1000 + k for classes with instances (k counts that class's objects)."""
    from cityscapesscripts.helpers.labels import labels

    has_instances = [label.id for label in labels if label.hasInstances and label.id >= 0]
    sample = next(
        s
        for s in (render_scene("cityscapes", i, 0, *SIZE, city="bonn") for i in range(20))
        if np.isin(s.label, has_instances).any()
    )
    write_cityscapes_sample(tmp_path, "train", "bonn", 7, sample)
    ids = np.asarray(Image.open(tmp_path / "gtFine/train/bonn/bonn_000000_000007_gtFine_instanceIds.png"))
    things = np.isin(sample.label, has_instances) & (sample.instance > 0)
    np.testing.assert_array_equal(ids[~things], sample.label[~things])
    np.testing.assert_array_equal(ids[things] // 1000, sample.label[things])
    for label_id in np.unique(sample.label[things]):
        objects = np.unique(sample.instance[things & (sample.label == label_id)])
        assert sorted(np.unique(ids[things & (sample.label == label_id)]) % 1000) == list(range(len(objects)))


def test_target_and_synthia_hold_unevaluated_ids():
    """As in the real label files: ego hood (1) in every Cityscapes frame, rectification border (2) and
    static (4) in some; SYNTHIA paints lane markings (22); no ids outside the tables."""
    city = [render_scene("cityscapes", i, 0, *SIZE, city="c").label for i in range(12)]
    assert all((label == CITYSCAPES_IGNORED_IDS["ego vehicle"]).any() for label in city)
    for name in ("rectification border", "static"):
        assert any((label == CITYSCAPES_IGNORED_IDS[name]).any() for label in city)
    synthia = [render_scene("synthia", i, 0, *SIZE).label for i in range(12)]
    assert any((label == 22).any() for label in synthia)
    assert max(int(label.max()) for label in synthia) <= 22


def test_camera_domain_has_more_sensor_noise():
    """Flat-region noise: the median absolute 3×3 high-pass residual (robust to edges, which the crisp
    game renderer has more of) is far larger for the camera-like target than for the game."""
    import cv2

    def noise_energy(domain):
        residuals = []
        for index in range(8):
            grey = render_scene(domain, index, 0, *SIZE).image.astype(np.float32).mean(axis=2)
            residuals.append(np.median(np.abs(grey - cv2.blur(grey, (3, 3)))))
        return np.mean(residuals)

    assert noise_energy("cityscapes") > 2.0 * noise_energy("gta5")


# ---- class-conditional appearance of the camera domain (pipeline/synthetic/appearance.py, issue 13) --


def test_material_gains_draw_one_gain_per_group_and_leave_other_parts_alone():
    from pipeline.synthetic.appearance import Drift, material_gains
    from pipeline.synthetic.codes import Part

    drift = {(Part.ASPHALT, Part.PARKING_PAVE): Drift(0.2, 0.05), (Part.FOLIAGE,): Drift(0.3, 0.0)}
    gains = material_gains(np.random.default_rng(0), drift)
    assert gains.shape == (len(Part), 3) and gains.dtype == np.float32
    np.testing.assert_array_equal(gains[Part.ASPHALT], gains[Part.PARKING_PAVE])
    assert np.all(gains[[p for p in Part if p not in (Part.ASPHALT, Part.PARKING_PAVE, Part.FOLIAGE)]] == 1)
    # Hue σ 0: a pure brightness gain exp(σ·n), the same on every channel.
    assert np.ptp(gains[Part.FOLIAGE]) == 0
    np.testing.assert_array_equal(gains, material_gains(np.random.default_rng(0), drift))
    # The log brightness gain has standard deviation σ (here over 2000 images).
    rng = np.random.default_rng(1)
    logs = [np.log(material_gains(rng, drift)[Part.FOLIAGE, 0]) for _ in range(2000)]
    assert abs(np.std(logs) - 0.3) < 0.02 and abs(np.mean(logs)) < 0.03


def test_patches_cover_the_asked_share_with_soft_or_crisp_borders():
    from pipeline.synthetic.appearance import patches

    soft = patches(np.random.default_rng(0), 128, 256, 30.0, 0.3, 0.1)
    crisp = patches(np.random.default_rng(0), 128, 256, 30.0, 0.3, 0.02)
    for field in (soft, crisp):
        assert field.min() >= 0 and field.max() <= 1
        assert abs(field.mean() - 0.3) < 0.08
    border = lambda field: ((field > 0.05) & (field < 0.95)).mean()  # noqa: E731
    assert border(crisp) < 0.5 * border(soft)


def test_canopy_gaps_are_a_small_share_of_the_foliage():
    from pipeline.synthetic.appearance import canopy_gaps

    foliage = np.zeros((128, 256), dtype=bool)
    foliage[10:90, 20:200] = True
    gaps = canopy_gaps(np.random.default_rng(0), foliage, 3.0, 0.05)
    assert not (gaps & ~foliage).any()
    assert 0.01 < gaps[foliage].mean() < 0.12
    assert not canopy_gaps(np.random.default_rng(0), foliage, 3.0, 0.0).any()


def test_soften_thin_structures_blends_thin_lines_not_large_boards():
    """A 1-pixel line (coverage ≈ 0.73 > ½ at σ = 1.5) becomes lerp(line, background, strength); the
    inside of a 20-pixel board (coverage ≈ 0) and every pixel outside the mask keep their colour."""
    from pipeline.synthetic.appearance import soften_thin_structures

    background, line, board = (0.6, 0.6, 0.6), (0.1, 0.2, 0.3), (0.9, 0.1, 0.1)
    rgb = np.empty((40, 60, 3), dtype=np.float32)
    rgb[:] = background
    rgb[:, 10] = line
    rgb[10:30, 30:50] = board
    thin = np.zeros((40, 60), dtype=bool)
    thin[:, 10] = True
    thin[10:30, 30:50] = True
    out = soften_thin_structures(rgb.copy(), thin, sigma=1.5, strength=0.4)
    np.testing.assert_allclose(out[5:35, 10], np.broadcast_to(0.6 * np.array(line) + 0.4 * 0.6, (30, 3)),
                               atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(out[20, 40], board, atol=1e-4)
    np.testing.assert_array_equal(out[~thin], rgb[~thin])


def test_only_the_camera_look_has_the_class_conditional_effects():
    """The game-like sources keep their look (one asset per material, uniform light, crisp thin parts);
    the camera-like target gets every effect of pipeline/synthetic/appearance.py."""
    from pipeline.synthetic.looks import sample_look
    from pipeline.synthetic.palettes import MATERIAL_DRIFT

    effects = ("light_variation", "canopy_gaps", "thin_softening")
    for domain in ("gta5", "synthia"):
        look = sample_look(np.random.default_rng(0), domain)
        assert not MATERIAL_DRIFT[domain] and all(getattr(look, name) == 0 for name in effects)
        assert look.shade_coverage == 0 and look.vertical_ambient == 1 and look.sky_gain == 1
    camera = [sample_look(np.random.default_rng(i), "cityscapes") for i in range(40)]
    assert MATERIAL_DRIFT["cityscapes"] and all(getattr(camera[0], name) > 0 for name in effects)
    assert any(look.shade_coverage > 0 for look in camera)  # sunny days only
    assert all(look.vertical_ambient < 1 for look in camera)


def test_normalisation_gap_harness_formulas():
    """benchmarks/normalisation_gap.py: the gap share by hand, and the diagnostic's colour map gives
    target colours the source's mean and covariance."""
    from benchmarks.normalisation_gap import colour_statistics, colour_transfer, gap_share

    assert gap_share(8.0, 12.0, 20.0) == pytest.approx(1 / 3)
    assert np.isnan(gap_share(10.0, 12.0, 10.0))
    rng = np.random.default_rng(0)
    source = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    mixing = np.array([[0.5, 0.1, 0.0], [0.0, 0.3, 0.1], [0.2, 0.0, 0.4]])  # a greyish, correlated target
    target = [(rng.random((20, 30, 3)) @ mixing * 255).astype(np.uint8) for _ in range(3)]
    (mean_s, cov_s), (mean_t, cov_t) = colour_statistics(source), colour_statistics(target)
    transfer = colour_transfer((mean_s, cov_s), (mean_t, cov_t))
    np.testing.assert_allclose(transfer[:, :3] @ mean_t + transfer[:, 3], mean_s, atol=1e-9)
    np.testing.assert_allclose(transfer[:, :3] @ cov_t @ transfer[:, :3].T, cov_s, atol=1e-9)
