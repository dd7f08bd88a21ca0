# Acquire from Google Earth Engine (source.kind: gee). Filled in by the Earth Engine stage.
