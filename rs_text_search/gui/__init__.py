"""The QGIS face of rs_text_search: dock, map tool, results layers, tasks and Processing algorithms.

A thin Qt/QGIS layer over ``rs_text_search.core``: pixels come from QGIS data providers and
coordinate maths from QGIS, so no second GDAL or PROJ is ever loaded into the QGIS process.
Qt is imported only through ``qgis.PyQt``.
"""
