"""Lighting and camera settings of one synthetic image (`Look`), drawn per image for each domain: the
game's times of day and weather presets, the low-poly renderer's clear light, and the car-mounted
camera's mostly overcast days with a tint, exposure and weather odds shared by each city (`CityLook`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Look:
    """Lighting and camera settings of one image (sampled per image; cityscapes also per city)."""

    sun: tuple[float, float, float]  # unit horizontal direction (x, z) towards the sun, shadow m per m
    sun_elevation: float  # radians
    ambient: float  # light reaching shadowed surfaces
    diffuse: float  # direct sunlight
    shadow_blur: float  # sigma in pixels at 512 width (0: hard shadows)
    sky_top: tuple[float, float, float]  # RGB 0–1
    sky_horizon: tuple[float, float, float]
    cloud: tuple[float, float, float]
    cloud_cover: float  # 0 clear … 1 overcast
    haze_distance: float  # metres
    haze_strength: float  # 0…1 at infinity
    tint: tuple[float, float, float]  # white-balance gains
    exposure: float
    saturation: float
    contrast: float
    vignetting: float  # brightness loss at the corners
    blur: float  # Gaussian sigma, pixels at 512 width
    noise: float  # sensor noise sigma (0–1 intensity units)
    jpeg_quality: int  # 0: no JPEG round trip
    # Class-conditional camera effects (pipeline.synthetic.appearance); 0 switches one off (the game looks).
    light_variation: float = 0.0  # amplitude of the log light gain over the image (illumination_field)
    shade_coverage: float = 0.0  # share of the image in shadow of things outside the frame (sunny days)
    canopy_gaps: float = 0.0  # share of foliage pixels showing the sky
    thin_softening: float = 0.0  # how far thin structures blend into their background (0–1)
    # Ambient light on vertical faces relative to the ground. 1: a game engine's flat ambient term. Under
    # a real sky dome a vertical face sees half the sky plus light bounced off the ground (albedo a):
    # (1 + a) / 2 ≈ 0.55–0.65, less in a street canyon, so walls, crowns, cars and people are darker
    # relative to the road than in a game frame.
    vertical_ambient: float = 1.0
    # Sky radiance relative to the scene. A camera exposes for the street, so a bright overcast sky
    # often clips to white; a game tone-maps its sky into range (1).
    sky_gain: float = 1.0


@dataclass(frozen=True)
class CityLook:
    """What is common to every image of one city (Cityscapes-like target)."""

    tint: tuple[float, float, float]
    exposure: float
    saturation: float
    sunny: float  # probability of a sunny (not overcast) day


def city_look(rng: np.random.Generator) -> CityLook:
    """Draw what every image of one city shares: a white-balance tint, exposure, saturation, sunny odds."""
    gains = 1.0 + rng.uniform(-0.04, 0.04, size=3)
    return CityLook(
        tuple(gains.tolist()), rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1), rng.uniform(0.05, 0.35)
    )  # type: ignore[arg-type]


@dataclass(frozen=True)
class Weather:
    """A game time of day / weather preset."""

    probability: float
    sun_elevation: tuple[float, float]  # degrees
    ambient: float
    diffuse: float
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    cloud_cover: tuple[float, float]
    tint: tuple[float, float, float]
    exposure: float


# GTA5 is recorded over the game's day cycle and weather; most frames are sunny.
GAME_WEATHER: dict[str, Weather] = {
    "noon": Weather(
        0.4, (45, 70), 0.42, 0.85, (0.16, 0.42, 0.9), (0.62, 0.78, 0.95), (0.0, 0.45), (1.02, 1.0, 0.96), 1.05
    ),
    "afternoon": Weather(
        0.25, (25, 45), 0.42, 0.85, (0.2, 0.45, 0.88), (0.8, 0.82, 0.85), (0.0, 0.45), (1.06, 1.0, 0.9), 1.0
    ),
    "evening": Weather(
        0.12, (10, 22), 0.45, 0.8, (0.24, 0.3, 0.6), (0.96, 0.64, 0.4), (0.0, 0.45), (1.1, 0.95, 0.8), 0.88
    ),
    "overcast": Weather(
        0.23, (60, 80), 0.8, 0.22, (0.6, 0.64, 0.7), (0.82, 0.84, 0.86), (0.8, 1.0), (1.0, 1.0, 1.0), 0.95
    ),
}


def _sun(rng: np.random.Generator, elevation: float) -> tuple[float, float, float]:
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    return (float(np.cos(azimuth)), float(np.sin(azimuth)), float(1.0 / np.tan(elevation)))


def sample_look(rng: np.random.Generator, domain: str, city: CityLook | None = None) -> Look:
    """Draw one image's lighting and camera settings for `domain` (`city`: the Cityscapes-like city's)."""
    if domain == "gta5":
        return _game_look(rng)
    if domain == "synthia":
        return _low_poly_look(rng)
    if domain != "cityscapes":
        raise ValueError(f"unknown domain {domain!r}: expected gta5, synthia or cityscapes")
    return _camera_look(rng, city or CityLook((1.0, 1.0, 1.0), 1.0, 1.0, 0.2))


def _game_look(rng: np.random.Generator) -> Look:
    """GTA5: one of the game's weather presets, hard shadows, saturated, no camera effects."""
    weather = str(rng.choice(list(GAME_WEATHER), p=[w.probability for w in GAME_WEATHER.values()]))
    w = GAME_WEATHER[weather]
    elevation = np.radians(rng.uniform(*w.sun_elevation))
    return Look(
        sun=_sun(rng, elevation),
        sun_elevation=float(elevation),
        ambient=w.ambient,
        diffuse=w.diffuse,
        shadow_blur=0.0,
        sky_top=w.sky_top,
        sky_horizon=w.sky_horizon,
        cloud=(1.0, 0.97, 0.94),
        cloud_cover=rng.uniform(*w.cloud_cover),
        haze_distance=rng.uniform(250, 500),
        haze_strength=0.5,
        tint=w.tint,
        exposure=w.exposure * rng.uniform(0.95, 1.05),
        saturation=rng.uniform(1.05, 1.25),
        contrast=rng.uniform(1.05, 1.15),
        vignetting=0.0,
        blur=0.0,
        noise=0.0,
        jpeg_quality=0,
    )


def _low_poly_look(rng: np.random.Generator) -> Look:
    """SYNTHIA: clear pale sky, soft flat light, no camera effects."""
    elevation = np.radians(rng.uniform(40, 75))
    return Look(
        sun=_sun(rng, elevation),
        sun_elevation=float(elevation),
        ambient=0.62,
        diffuse=0.5,
        shadow_blur=0.0,
        sky_top=(0.5, 0.68, 0.9),
        sky_horizon=(0.78, 0.86, 0.95),
        cloud=(1.0, 1.0, 1.0),
        cloud_cover=0.0,
        haze_distance=800.0,
        haze_strength=0.3,
        tint=(0.97, 1.0, 1.04),
        exposure=rng.uniform(1.0, 1.12),
        saturation=rng.uniform(1.0, 1.15),
        contrast=rng.uniform(0.9, 1.0),
        vignetting=0.0,
        blur=0.0,
        noise=0.0,
        jpeg_quality=0,
    )


def _camera_look(rng: np.random.Generator, city: CityLook) -> Look:
    """Cityscapes: mostly overcast (the city's odds), the city's tint and exposure, every camera effect."""
    sunny = rng.random() < city.sunny
    elevation = np.radians(rng.uniform(30, 55) if sunny else rng.uniform(70, 85))
    base_tint = np.array([0.965, 1.0, 0.955]) * np.array(city.tint)  # greenish-grey white balance
    return Look(
        sun=_sun(rng, elevation),
        sun_elevation=float(elevation),
        ambient=0.55 if sunny else 0.86,
        diffuse=0.5 if sunny else 0.14,
        shadow_blur=1.5 if sunny else 3.0,
        sky_top=(0.62, 0.7, 0.8) if sunny else (0.8, 0.83, 0.85),
        sky_horizon=(0.86, 0.88, 0.9) if sunny else (0.9, 0.91, 0.91),
        cloud=(0.94, 0.95, 0.95),
        cloud_cover=rng.uniform(0.2, 0.5) if sunny else 1.0,
        haze_distance=rng.uniform(150, 280),
        haze_strength=0.55,
        tint=tuple(base_tint.tolist()),
        exposure=rng.uniform(0.84, 0.96) * city.exposure,
        saturation=rng.uniform(0.82, 0.98) * city.saturation,
        contrast=rng.uniform(0.94, 1.04),
        vignetting=rng.uniform(0.2, 0.35),
        blur=rng.uniform(0.6, 0.95),
        noise=rng.uniform(0.01, 0.02),
        jpeg_quality=int(rng.integers(55, 85)),
        light_variation=rng.uniform(0.1, 0.2),
        shade_coverage=rng.uniform(0.1, 0.35) if sunny else 0.0,
        canopy_gaps=rng.uniform(0.01, 0.03),
        thin_softening=rng.uniform(0.35, 0.6),
        vertical_ambient=rng.uniform(0.5, 0.65),
        sky_gain=rng.uniform(1.1, 1.35),
    )  # type: ignore[arg-type]
