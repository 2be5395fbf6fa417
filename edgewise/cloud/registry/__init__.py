"""The model registry: signed bundles by name and version, promotions to fleets (:mod:`.storage`)."""
