"""diffusers pipelines of dermdiff, one file per pipeline; imported as `dermdiff.pipelines`.

Names load lazily so that importing the package does not import diffusers.
"""

from dermdiff.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DermDiffPipeline": ".pipeline_dermdiff",
    "skin_type_sweep": ".sweeps",
    "size_sweep": ".sweeps",
    "DermGANPipeline": ".pipeline_dermgan",
    "DCGANPipeline": ".pipeline_dcgan",
    "LesionEditPipeline": ".pipeline_lesion_edit",
    "load_pipeline": ".loading",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
