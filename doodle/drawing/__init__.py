"""A drawing, from text to pixels: the JSON parser (``parse``) into flat stroke arrays (``strokes``),
the one rasterizer that training, prediction and the plots share (``raster``), the point sequences
of the stroke models (``sequence``), fitting pixel images to the render params (``images``), and the
seeded stroke augmentation (``augment``)."""
