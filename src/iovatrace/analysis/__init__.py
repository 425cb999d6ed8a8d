"""Analysis: polars frames (df_*) and matplotlib figures (plot_*) over parsed events and replayed state."""
