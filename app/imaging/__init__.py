"""Image helpers: decoding client input, mask conventions, crop geometry, PNG metadata."""
