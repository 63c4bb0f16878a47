"""Training the FFRM inside nerfstudio: datamanager (clips + labels), model wrapper, pipeline."""
