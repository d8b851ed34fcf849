"""The headless engine: numpy + ONNX Runtime + faiss (+ rasterio/pyproj/shapely headless).

Never imports Qt, QGIS or torch (tests/core/test_layering.py enforces it). Modules that need
rasterio, pyproj, shapely or pyogrio import them lazily, so the QGIS plugin can use the engine
without loading a second GDAL/PROJ into the QGIS process.
"""
