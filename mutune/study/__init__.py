"""The study machinery the search, the sweeps and the laws share, over Optuna: where a study lives
(:mod:`.storage`, :mod:`.journal`), the spec guard (:mod:`.guard`), what a trial draws
(:mod:`.samplers`), its trials as mutune counts them (:mod:`.trials`), the trial loop (:mod:`.loop`)
and worker processes (:mod:`.workers`, which loads torch: import it where workers run).

The names the jobs use are re-exported here (``from mutune import study``; ``study.run_trials``).
"""

from ..errors import SearchFailed
from .guard import open_study, trial_relevant
from .loop import BudgetLock, Heartbeat, TrialJob, reap_orphans, run_trials
from .storage import HEARTBEAT_SECONDS, JOURNAL_SUFFIXES, NamedJournalBackend, open_storage, storage_url
from .trials import count, enqueue, enqueue_retries, is_finished, trial_event, trial_params

__all__ = [
    "HEARTBEAT_SECONDS",
    "JOURNAL_SUFFIXES",
    "BudgetLock",
    "Heartbeat",
    "NamedJournalBackend",
    "SearchFailed",
    "TrialJob",
    "count",
    "enqueue",
    "enqueue_retries",
    "is_finished",
    "open_storage",
    "open_study",
    "reap_orphans",
    "run_trials",
    "storage_url",
    "trial_event",
    "trial_params",
    "trial_relevant",
]
