"""The embedded synthetic benchmark: procedural street scenes in three domains (gta5, synthia,
cityscapes), written in the real dataset layouts by the `synthesize` stage (`stages/synthesize.py`).

Entry points: `samples.render_scene` (one image with its labels) and the `writers`. The modules, by
concern:
- per-pixel codes: `codes` (class codes, materials, facings, the packed look field);
- camera and canvas: `camera` (pinhole over a flat ground, projections), `canvas` (the fields a scene is
  drawn into, `Scene`);
- models: `polygons` (outline helpers), `sprites` (persons, two-wheelers, riders, vehicles);
- layouts: `layouts` (each domain's viewpoint and content statistics, the sampled street);
- scene building: `builder` (state and drawing primitives), `ground`, `buildings`, `vegetation`,
  `furniture`, `road_users`, `placement` (where objects stand), `camera_regions`; `scene.draw_scene`
  runs them in order;
- domain styles: `palettes`, `textures`, `looks` (lighting and camera settings), `appearance` (the
  camera's class-conditional effects), `render` (scene fields → RGB);
- output: `labels` (each dataset's label ids), `samples`, `writers`, `jobs` (the stage's Ray tasks).
"""
