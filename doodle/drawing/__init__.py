"""A drawing, from text to pixels: the stroke parser (``strokes``), the one rasterizer that
training, prediction and the plots share (``raster``), fitting pixel images to the render params
(``images``), and the seeded stroke augmentation (``augment``)."""
