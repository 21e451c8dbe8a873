"""Human real-or-synthetic studies (DermGAN §3, Furger §4.1.3): a local web app, durable answers, numbers.

`dermdiff study serve` runs the app (`app.create_app`), answers live in SQLite (`store.StudyStore`),
`dermdiff study export` writes the CSV and the summary (`export.export_study`, `stats.summarize`).
Flask is needed only for the web app (`pip install dermdiff[study]`).
"""

from .export import export_study
from .items import StudyImage, scan_folder
from .plan import TASKS, Unit, plan_units
from .stats import fleiss_kappa, summarize
from .store import AlreadyAnsweredError, NotFoundError, StudyError, StudyStore

__all__ = [
    "TASKS", "AlreadyAnsweredError", "NotFoundError", "StudyError", "StudyImage", "StudyStore", "Unit",
    "export_study", "fleiss_kappa", "plan_units", "scan_folder", "summarize",
]
