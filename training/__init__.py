"""Training (fine-tunes and LoRAs from recorded data). Not implemented yet: see the
training issue. The embedded model builder lives in ``app.pipelines.embedded``."""
