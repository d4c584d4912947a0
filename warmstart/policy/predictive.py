"""Predictive warming: learn each model's arrivals and keep it loaded exactly when a cold request would
cost more than the replica-seconds spent avoiding it.

Like the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., ATC 2020) it keeps a
per-model histogram of idle gaps and derives a keep-alive and a later pre-warm from it. It differs where
that paper leaves requests on the table:
- every gap is weighted by the requests that a cold start after it would make wait (the burst that
  follows it within one cold start), not counted once: a gap before 500 requests matters 500 times more;
- the keep-alive and pre-warm windows are chosen by one exchange rate, `cold_request_cost` replica-seconds
  per cold request, maximising requests kept warm minus replica-seconds paid (not fixed percentiles);
- the histogram is conditioned on the recent rate (a busy hour has short gaps, a quiet one long ones);
- silences longer than any keep-alive are covered from time-of-day / day-of-week profiles of when the
  model wakes up, pre-warmed one measured cold start (p95) ahead; a slot is pre-warmed only when its
  expected cold requests are worth its cost and it recurred on at least `min_days` days, so a one-off
  burst is not chased;
- everything decays with a half-life, so the policy follows a model whose habits change.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from warmstart.policy import tiers
from warmstart.policy.observation import Observation
from warmstart.policy.plan import Plan, WarmSpan
from warmstart.policy.predictive_params import DAY, PredictiveParams
from warmstart.policy.predictive_state import CONTEXTS, EDGES, NB, NC, WIDTHS, PredictiveState


class PredictivePolicy:
    def __init__(self, params: PredictiveParams | None = None) -> None:
        self.p = params or PredictiveParams()
        self.slots = round(DAY / self.p.slot)
        self._prev = np.roll(np.arange(self.slots), 1)  # index of the slot before each slot, around midnight
        self._next = np.roll(np.arange(self.slots), -1)
        spent_w = np.append(WIDTHS, 0.0)[None, :]
        # the prior of a model with no history: gaps log-uniform from 1 s to 2 days, bursts of one request
        mids = np.sqrt(np.maximum(EDGES[:-1], 0.5) * np.minimum(EDGES[1:], 4 * DAY))
        flat_n = ((EDGES[:-1] >= 1) & (EDGES[:-1] < 2 * DAY)).astype(np.float64)
        flat_idle = (np.clip(mids[:, None] - EDGES[None, :-1], 0.0, spent_w) * flat_n[:, None]).sum(axis=0)
        self._flat = (flat_n, flat_n.copy(), flat_idle)

    def initial_state(self) -> PredictiveState:
        z = np.zeros(self.slots)
        return PredictiveState(wake_w=z, wake_days=z.copy(), wake_last_day=np.full(self.slots, -1.0),
                               wake_count=z.copy(), wake_n=z.copy(), wake_off=z.copy(), wake_off2=z.copy())

    # ---- learning ------------------------------------------------------------------------------------

    def observe(self, obs: Observation, s: PredictiveState, now: float) -> PredictiveState:
        p, c = self.p, obs.cold_start_s
        decay = 1.0 if math.isinf(s.updated) else 0.5 ** (max(0.0, now - s.updated) / p.half_life)
        n, w, idle = s.n * decay, s.w * decay, s.idle * decay
        fast = 1.0 if math.isinf(s.updated) else 0.5 ** (max(0.0, now - s.updated) / p.recent_half_life)
        nf, wf, idlef = s.nf * fast, s.wf * fast, s.idlef * fast
        wake_w, wake_days, wake_last_day = s.wake_w * decay, s.wake_days * decay, s.wake_last_day
        wake_count, wake_n = s.wake_count, s.wake_n * decay
        wake_off, wake_off2 = s.wake_off * decay, s.wake_off2 * decay
        wake_dow, seen_dow = s.wake_dow * decay, s.seen_dow * decay
        new = np.asarray(obs.arrivals, dtype=np.float64)  # the server shows a tuple
        first_seen = s.first_seen if not math.isnan(s.first_seen) else (float(new[0]) if len(new) else math.nan)
        last_day = s.last_day
        if not math.isnan(first_seen):
            # whole days observed since the model was first seen: the exposure of the wake-up profile
            today = math.floor(now / DAY)
            for day in range(int(max(last_day + 1, math.floor(first_seen / DAY))), today):
                seen_dow[_weekday(day)] += 1.0
                last_day = day
        if len(s.buf) and len(new) and new[0] < s.buf[-1]:
            new = np.maximum(new, s.buf[-1])  # a wall clock stepped back: no negative gaps
        allv = np.concatenate([s.buf, new]) if len(s.buf) else new
        gaps_seen, wakes_seen = s.gaps_seen, s.wakes_seen
        pending = s.pending if not math.isnan(s.pending) else (float(allv[0]) if len(allv) else math.nan)
        if len(allv) >= 2:
            i0 = int(np.searchsorted(allv, pending, side="left"))
            ends = allv[i0 + 1:]
            k = int(np.searchsorted(ends + c, now, side="right"))  # gaps whose cold-start window has closed
            if k:
                idx = np.arange(i0, i0 + k)
                gaps = allv[idx + 1] - allv[idx]
                gap_ends = allv[idx + 1]
                burst = (np.searchsorted(allv, gap_ends + c, side="left") - (idx + 1)).astype(np.float64)
                ctx = self.context(idx + 1 - np.searchsorted(allv, allv[idx] - p.recent_window, side="right"))
                b = np.clip(np.searchsorted(EDGES, gaps, side="right") - 1, 0, NB - 1)
                cell = ctx * NB + b
                counts = np.bincount(cell, minlength=NC * NB).reshape(NC, NB)
                n += counts
                dw = np.bincount(cell, weights=burst, minlength=NC * NB).reshape(NC, NB)
                w += dw
                nf += counts
                wf += dw
                # idle seconds a replica kept warm through bin j spends there: the full width for gaps that
                # outlast the bin, the part after the bin's start for gaps that end in it
                sums = np.bincount(cell, weights=gaps, minlength=NC * NB).reshape(NC, NB)
                longer = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]  # gaps in bin j or later
                outlast = np.concatenate([longer[:, 1:], np.zeros((NC, 1))], axis=1)
                didle = (outlast[:, :-1] * WIDTHS + sums[:, :-1] - EDGES[:-2] * counts[:, :-1])
                idle[:, :-1] += didle
                idlef[:, :-1] += didle
                ka = np.where(np.isnan(s.keep_alive), p.fallback_keep_alive, s.keep_alive)[ctx]
                wake = gaps > np.maximum(ka, p.slot)
                if wake.any():
                    wake_last_day, wake_count = wake_last_day.copy(), wake_count.copy()
                    for t, weight in zip(gap_ends[wake], burst[wake], strict=True):
                        slot = int((t % DAY) // p.slot)
                        day = math.floor(t / DAY)
                        offset = t % p.slot
                        wake_w[slot] += weight
                        wake_n[slot] += 1.0
                        wake_off[slot] += offset
                        wake_off2[slot] += offset * offset
                        wake_dow[_weekday(day)] += weight
                        if wake_last_day[slot] != day:
                            wake_days[slot] += 1.0
                            wake_count[slot] += 1.0
                            wake_last_day[slot] = day
                pending = float(allv[i0 + k])
                gaps_seen = s.gaps_seen + k
                wakes_seen = s.wakes_seen + int(np.count_nonzero(wake))
            allv = allv[np.searchsorted(allv, pending - p.recent_window, side="right"):]
        return replace(s, updated=now, first_seen=first_seen, buf=allv, pending=pending, n=n, w=w, idle=idle,
                       nf=nf, wf=wf, idlef=idlef,
                       wake_w=wake_w, wake_days=wake_days, wake_last_day=wake_last_day, wake_count=wake_count,
                       wake_n=wake_n, wake_off=wake_off, wake_off2=wake_off2, wake_dow=wake_dow,
                       seen_dow=seen_dow, last_day=last_day, gaps_seen=gaps_seen, wakes_seen=wakes_seen)

    @staticmethod
    def context(recent: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(CONTEXTS, recent, side="right") - 1, 0, NC - 1)

    # ---- deciding ------------------------------------------------------------------------------------

    def decide(self, obs: Observation, state: PredictiveState, now: float) -> tuple[Plan, PredictiveState]:
        p, c = self.p, obs.cold_start_s
        s = self.observe(obs, state, now)
        # the prior does not decay with the data: re-derive at least every quarter half-life (the fast copy's
        # own decay is seen at the next gap learned or the next such epoch: re-deriving every quarter of its
        # half-life measured no better on the tuning windows)
        epoch = math.floor(now / (p.half_life / 4))
        key = (float(s.gaps_seen), c, float(epoch), obs.ram_cold_start_s or 0.0, obs.ram_price_s)
        if s.after_key != key:
            after, kas, ram = self.keep_alive_spans(s, c, obs.ram_cold_start_s, obs.ram_price_s)
            s = replace(s, keep_alive=kas, after=after, after_key=key, ram_after=ram)
        spans = self.profile_spans(s, now, c)
        quiet = not len(obs.arrivals) and (math.isnan(s.pending) or now - s.pending > p.review)
        review = now + (p.horizon / 2 if quiet else p.review)
        return Plan(spans=spans, after_arrival=s.after, review_at=review,
                    recent_window=p.recent_window, ram_after_arrival=s.ram_after), s

    def keep_alive_spans(self, s: PredictiveState, c: float, ram_cold_start: float | None = None,
                         ram_price: float = 0.0) -> tuple[tuple[WarmSpan, ...], np.ndarray, tuple[WarmSpan, ...]]:
        """Per recent-rate class: how long to keep the model after a request (and a later pre-warm), and,
        when the model has a RAM tier (`ram_cold_start`), how long its weights then stay in RAM."""
        p = self.p
        s = self.mixed(s)
        after: list[WarmSpan] = []
        ram: list[WarmSpan] = []
        kas = np.empty(NC)
        wake = self.wake_burst(s)
        ram_cap = self.ram_cap(s)
        hold = 0.0 if ram_cold_start is None else self.wake_hold(s, c, ram_cold_start, ram_price)
        pooled = self.with_prior(s.n.sum(axis=0), s.w.sum(axis=0), s.idle.sum(axis=0), self._flat, p.prior_gaps, wake)
        for ci in range(NC):
            lo, hi = int(CONTEXTS[ci]), CONTEXTS[ci + 1] - 1
            hist = self.with_prior(s.n[ci], s.w[ci], s.idle[ci], pooled, p.prior_gaps, wake)
            ram_net = None if ram_cold_start is None else self.ram_net(hist, c, ram_cold_start, ram_price)
            seen = s.n[ci] if s.n[ci].sum() >= p.min_gaps else s.n.sum(axis=0)
            spans = self.keep_spans(*hist, c, seen=seen, ram_net=ram_net, cap=evidence(seen, p.keep_evidence))
            kas[ci] = spans[0].end if spans else 0.0
            after += [WarmSpan(sp.start, sp.end, sp.trigger, lo, hi) for sp in spans]
            if ram_cold_start is not None:
                horizon = self.ram_horizon(hist, c, ram_cold_start, ram_price, kas[ci], ram_cap)
                ram.append(WarmSpan(kas[ci], max(horizon, hold), "ram", lo, hi))
        return tuple(after), kas, tuple(ram)

    def mixed(self, s: PredictiveState) -> PredictiveState:
        """The gap histograms as decisions see them: the slow copy plus `recent_weight` x the fast one, scaled so
        that steady traffic weighs what it weighs in the slow copy alone (the prior and the `min_gaps` thresholds
        keep their meaning); a habit that moved within the last days counts for more than its share."""
        p = self.p
        if p.recent_weight <= 0:
            return s
        k = 1.0 / (1.0 + p.recent_weight * p.recent_half_life / p.half_life)
        return replace(s, n=k * (s.n + p.recent_weight * s.nf), w=k * (s.w + p.recent_weight * s.wf),
                       idle=k * (s.idle + p.recent_weight * s.idlef))

    def ram_net(self, hist: tuple[np.ndarray, np.ndarray, np.ndarray], c: float, ram_cold_start: float,
                ram_price: float) -> np.ndarray:
        n, w, idle = hist
        return tiers.ram_net(n[:-1], w[:-1], idle[:-1], cold_start=c, ram_cold_start=ram_cold_start,
                             ram_price=ram_price, rate=self.p.cold_request_cost)

    def ram_horizon(self, hist: tuple[np.ndarray, np.ndarray, np.ndarray], c: float, ram_cold_start: float,
                    ram_price: float, keep_alive: float, cap: float = math.inf) -> float:
        """Seconds after a request until which the weights stay in RAM once unloaded (policy.tiers)."""
        if hist[0].sum() < self.p.min_gaps + self.p.prior_gaps:
            return keep_alive  # too little known: disk after the unload, as without a RAM keep-alive
        return tiers.ram_horizon(EDGES, self.ram_net(hist, c, ram_cold_start, ram_price), keep_alive,
                                 min(self.p.max_ram_keep_alive, cap))

    def ram_cap(self, s: PredictiveState) -> float:
        """The longest RAM hold the model's own gaps support: `ram_evidence` x the end of the longest gap bin
        it was seen to have (a decayed count of at least a half; math.inf when `ram_evidence` is 0, or when it
        had a gap longer than the last edge). The prior's pseudo-gaps price what a hold gains; alone they do not
        hold weights in RAM for days."""
        return evidence(s.n.sum(axis=0), self.p.ram_evidence)

    def wake_hold(self, s: PredictiveState, c: float, ram_cold_start: float, ram_price: float) -> float:
        """How long after a request the model's wake-ups pay for holding its weights in RAM, however long the
        silences it has shown: 0 unless what RAM starts would have saved on them (`tiers.ram_net`: all but the
        first request of each burst waiting less, and the shorter starts) beats a RAM second for every second
        of the days the model was observed (at least one whole day). Then as long as that stays true while the
        silence goes on: the wake-ups decay with the half-life and every silent day adds a day observed, so
        the hold ends where the decayed worth meets the growing cost, at most `wake_ram_hold`."""
        p = self.p
        days = float(s.seen_dow.sum())
        if p.wake_ram_hold <= 0 or days < 1.0:
            return 0.0
        worth = tiers.ram_net(np.array([s.wake_n.sum()]), np.array([s.wake_w.sum()]), np.zeros(1),
                              cold_start=c, ram_cold_start=ram_cold_start, ram_price=ram_price,
                              rate=p.cold_request_cost)[0]
        day_cost = ram_price * DAY
        if not worth > day_cost * days:
            return 0.0
        # after t silent seconds (x = 0.5 ** (t / half_life)): worth x against day_cost (days x + h (1 - x)),
        # h the silent days' decayed sum as t grows without end; the hold ends where they meet
        h = p.half_life / (math.log(2) * DAY)
        x = day_cost * h / (worth - day_cost * days + day_cost * h)
        # the plan's spans count from the last request: add the silence already past
        past = 0.0 if math.isnan(s.pending) else max(0.0, s.updated - s.pending)
        return float(min(p.wake_ram_hold, past - p.half_life * math.log2(x)))

    def wake_burst(self, s: PredictiveState) -> float:
        """The requests a cold start after a long gap made wait, on average (one pseudo-gap of one request
        as the prior): what an unseen long gap is assumed to cost."""
        long = EDGES[:-1] >= self.p.wake_gap
        n = s.n[:, long].sum()
        return float((s.w[:, long].sum() + 1.0) / (n + 1.0))

    def with_prior(self, n: np.ndarray, w: np.ndarray, idle: np.ndarray,
                   prior: tuple[np.ndarray, np.ndarray, np.ndarray], alpha: float, wake: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add `alpha` pseudo-gaps shaped like `prior`: gaps not seen yet are rare, not impossible.

        What a cold start after a pseudo-gap costs: for a gap shorter than the recent window, the requests
        the current rate brings in a cold start (this histogram's mean burst); for a longer one, what the
        model's wake-ups brought (`wake`).
        """
        pn, _pw, pi = prior
        total = pn.sum()
        if total <= 0 or alpha <= 0:
            return n, w, idle
        scale = alpha / total
        burst = w.sum() / n.sum() if n.sum() > 0 else wake
        weight = np.where(EDGES[:-1] < self.p.recent_window, max(burst, wake), wake)
        return n + pn * scale, w + pn * scale * weight, idle + pi * scale

    def keep_spans(self, n: np.ndarray, w: np.ndarray, idle: np.ndarray, c: float,
                   seen: np.ndarray | None = None, ram_net: np.ndarray | None = None,
                   cap: float = math.inf) -> list[WarmSpan]:
        """Keep-alive after a request, and possibly a later pre-warm, from one gap histogram (`seen`: the
        gaps actually observed, without the prior; a pre-warm needs `min_period_gaps` of them in its span).
        `ram_net`: what holding the weights in RAM gains per bin (policy.tiers); the keep-alive is then chosen
        with RAM as the alternative after it, not disk."""
        p = self.p
        if n.sum() < p.min_gaps + p.prior_gaps:
            return [WarmSpan(0.0, p.fallback_keep_alive, "keep-alive")]
        net = p.cold_request_cost * w[:-1] + c * n[:-1] - idle[:-1]
        prefix = np.concatenate([[0.0], np.cumsum(net)])
        if ram_net is None:
            k = int(np.argmax(prefix))
        else:  # loaded through bins [0, k), then RAM through the best run [k, m): k maximising both together
            ram_prefix = np.concatenate([[0.0], np.cumsum(np.maximum(ram_net, -1e300))])
            best_ram_after = np.maximum.accumulate(ram_prefix[::-1])[::-1]
            k = int(np.argmax(prefix - ram_prefix + best_ram_after))
        ka = float(np.clip(EDGES[k], p.min_keep_alive, max(p.min_keep_alive, min(p.max_keep_alive, cap))))
        out = [WarmSpan(0.0, ka, "keep-alive")] if ka > 0 else [WarmSpan(0.0, 0.0, "keep-alive")]
        # a later pre-warm relative to the last request (callers with a period): the best run of bins
        # after the keep-alive, paying a cold start for every gap that lasts until it
        survivors = np.concatenate([np.cumsum(n[::-1])[::-1], [0.0]])
        # value of warming bins [i, m) = prefix[m] - prefix[i] - c * survivors[i], best m > i
        best_after = np.maximum.accumulate(prefix[::-1])[::-1]  # max over m >= i of prefix[m]
        span = None
        if k + 1 < NB - 1:
            i = np.arange(k + 1, NB - 1)
            value = best_after[i + 1] - prefix[i] - c * survivors[i]
            j = int(np.argmax(value))
            if value[j] > 0:
                start = int(i[j])
                m = start + 1 + int(np.argmax(prefix[start + 1:]))
                observed = (seen if seen is not None else n)[start:m].sum()
                if observed >= p.min_period_gaps and EDGES[start] < p.max_keep_alive:
                    span = (EDGES[start], EDGES[m])
        if span is not None:
            out.append(WarmSpan(max(ka, span[0] - c - p.lead), float(span[1]), "prediction"))
        return out

    def pooled_profile(self, s: PredictiveState) -> tuple[np.ndarray, ...]:
        """Wake-ups near a slot's edge fall on either side of it: each slot is judged with its two neighbours
        (offsets taken from the slot's own start)."""
        p = self.p
        prev, nxt = self._prev, self._next
        pooled = [a[prev] + a + a[nxt] for a in (s.wake_w, s.wake_days, s.wake_count, s.wake_n)]
        n, o, o2, w = s.wake_n, s.wake_off, s.wake_off2, p.slot
        off = (o[prev] - w * n[prev]) + o + (o[nxt] + w * n[nxt])
        off2 = (o2[prev] - 2 * w * o[prev] + w * w * n[prev]) + o2 + (o2[nxt] + 2 * w * o[nxt] + w * w * n[nxt])
        return (*pooled, off, off2)

    def profile_spans(self, s: PredictiveState, now: float, c: float) -> tuple[WarmSpan, ...]:
        """Pre-warm the times of day at which the model regularly wakes up after a long silence.

        A slot qualifies when wake-ups in it recurred on at least `min_days` days and on at least
        `min_recurrence` of the days observed lately; it is pre-warmed around the wake-ups' usual offset
        (mean +- 2 standard deviations, one cold start ahead) when the cold requests expected there are
        worth the replica-seconds that costs.
        """
        p = self.p
        days = float(s.seen_dow.sum())
        if days < p.min_days or not s.wake_w.any():
            return ()
        lam = p.cold_request_cost
        wake_w, wake_days, wake_count, wake_n, wake_off, wake_off2 = self.pooled_profile(s)
        per_day = wake_w / days
        # day-of-week factor, shrunk towards 1 until each weekday has been seen a few times
        mean_rate = s.wake_dow.sum() / days
        spans: list[WarmSpan] = []
        t = math.floor(now / p.slot) * p.slot
        while t < now + p.horizon:
            slot = int((t % DAY) // p.slot)
            if wake_count[slot] >= p.min_days and wake_days[slot] >= p.min_recurrence * days and wake_n[slot] > 0:
                wd = _weekday(math.floor(t / DAY))
                seen = s.seen_dow[wd]
                factor = 1.0
                if mean_rate > 0 and seen > 0:
                    factor = (seen * (s.wake_dow[wd] / seen) / mean_rate + 2.0) / (seen + 2.0)
                mean = wake_off[slot] / wake_n[slot]
                sd = max(p.min_spread, math.sqrt(max(0.0, wake_off2[slot] / wake_n[slot] - mean * mean)))
                lo, hi = max(-p.slot, mean - 2 * sd), min(2 * p.slot, mean + 2 * sd)
                start, end = t + lo - c - p.lead, t + hi + c
                if lam * per_day[slot] * factor > end - start and not (spans and spans[-1].end >= end):
                    spans.append(WarmSpan(start, end, "prediction"))
            t += p.slot
        return tuple(sp for sp in spans if sp.end > now)


def evidence(seen: np.ndarray, factor: float) -> float:
    """`factor` x the end of the longest gap bin in `seen` (gap counts per bin, decayed: at least a half
    counts), 0 when none; math.inf when `factor` is 0 (no cap) or a gap outlasted the last edge."""
    if factor <= 0:
        return math.inf
    nz = np.nonzero(seen >= 0.5)[0]
    return float(factor * EDGES[nz[-1] + 1]) if len(nz) else 0.0


def _weekday(day: int) -> int:
    return (day + 3) % 7  # 1970-01-01 was a Thursday
