"""Training package: fit, evaluate and export CLIP-style dual encoders for rs_text_search."""
