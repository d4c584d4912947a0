"""The predictive policy's settings (warmstart.policy.predictive): its exchange rate of replica-seconds for cold
requests, its bounds, and what it must have seen before it acts. `[warming.settings]` in the config sets them;
the values here were tuned on ../shared/traces only (docs/warming.md says on which days)."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


class SettingError(ValueError):
    """A predictive setting the policy cannot run with: its name, its value and why."""

    def __init__(self, name: str, value: float, reason: str) -> None:
        super().__init__(f"{name} = {value:g}: {reason}")
        self.name, self.value, self.reason = name, value, reason


@dataclass(frozen=True)
class PredictiveParams:
    # replica-seconds worth paying to keep one request from waiting for a cold start
    cold_request_cost: float = 160.0
    # how fast old behaviour is forgotten
    half_life: float = 7 * DAY
    # before this many gaps are known, keep the model warm for `fallback_keep_alive` after each request
    min_gaps: float = 8.0
    fallback_keep_alive: float = 300.0
    # never unload sooner than this after a request: a floor against what little data cannot show
    min_keep_alive: float = 300.0
    max_keep_alive: float = 3600.0
    # the longest the weights stay in RAM after a request (policy.tiers)
    max_ram_keep_alive: float = 2 * DAY
    # hold the weights in RAM no longer than this x the end of the longest gap bin the model was seen to have
    # (0: no cap): a RAM hold bought by the prior's unseen long gaps alone went unused (tuned on ServeGen days 2-6)
    ram_evidence: float = 1.0
    # but when the model's wake-ups (requests after a silence longer than its keep-alive) are worth more per day
    # than a day in RAM, hold its weights in RAM after each request as long as that stays true through a silence
    # (the wake-ups decaying with `half_life`), however long the silences it has shown; at most this (0: never):
    # the request history's default retention, beyond which nothing is remembered (chosen on ServeGen days 2-6:
    # better on each tuning window at 30 s and at 5 s)
    wake_ram_hold: float = 28 * DAY
    # keep the model loaded after a request no longer than this x the end of the longest gap bin seen at that
    # recent rate (but at least `min_keep_alive`; 0: no cap): the prior alone does not buy an hour after a
    # busy spell that has never paused for long (Azure: +55 % cost over a fixed 300 s, no request kept warm)
    keep_evidence: float = 1.0
    # a pre-warm relative to the last request needs this many observed gaps ending in it
    min_period_gaps: float = 3.0
    # time-of-day profile slot (each judged with its two neighbours), and how many distinct days a wake-up must
    # recur on before it is pre-warmed; 300 s, from 600 s: two habits 20 minutes apart no longer blur into one
    # half-hour pre-warm (better on each of ServeGen days 2-4, 3-6, 4-6 at 30 s and 5 s; 180 s and 120 s were
    # worse on days 3-6)
    slot: float = 300.0
    min_days: float = 2.0
    min_recurrence: float = 0.25
    # a habit is pre-warmed from 2 standard deviations of its times before their mean; at least this many s
    min_spread: float = 30.0
    # how far ahead profile spans are planned, and how often the policy re-decides
    horizon: float = 3 * 3600.0
    review: float = 900.0
    # seconds added to the measured cold start before a planned span (the live controller's tick)
    lead: float = 0.0
    # pseudo-gaps from the prior (the model's pooled histogram for a recent-rate class; log-uniform for the model)
    prior_gaps: float = 10.0
    # gaps at least this long are wake-ups: their bursts price the gaps not seen yet
    wake_gap: float = 120.0
    # requests in this many seconds up to a request are its recent rate
    recent_window: float = 600.0
    # habits that move: a second copy of the gap histograms decays with `recent_half_life`, and the keep-alive
    # and RAM horizon are chosen from the two added, this copy `recent_weight` times over (scaled so that steady
    # traffic weighs what it weighs in the first copy alone; 0: the first copy alone). Chosen on ServeGen days
    # 2-4, 3-6 and 4-6 (seeds 0-2): 0-2.1 points fewer cold requests against the curve at 30 s on each window
    # and draw, days 2-4 better at 5 s too (docs/warming.md)
    recent_weight: float = 4.0
    recent_half_life: float = 1 * DAY

    def __post_init__(self) -> None:
        # what the policy divides by or steps with (the decays, the time-of-day slots; the next review and the
        # planning horizon: at 0 it would re-decide without end)
        for name in ("half_life", "recent_half_life"):
            value = getattr(self, name)
            if not value > 0:
                raise SettingError(name, value, "must be above 0 seconds")
        # and what would make each decision huge: an array per slot of the day, a span per slot of the horizon,
        # a decision per review
        if not 60 <= self.slot <= DAY:
            raise SettingError("slot", self.slot, "must be from 60 s to a day (86400 s)")
        if not 0 < self.horizon <= 7 * DAY:
            raise SettingError("horizon", self.horizon, "must be above 0 and at most 7 days (604800 s)")
        if not self.review >= 1:
            raise SettingError("review", self.review, "must be at least 1 s")
