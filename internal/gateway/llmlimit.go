package gateway

import (
	"context"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/plinth-dev/plinth/internal/ratelimit"
)

// Indices of a call's limits in reservation.limits.
const (
	limRPMKey = iota
	limTPMKey
	limRPMTeam
	limTPMTeam
	limTokensDay
	limTokensMonth
	limBudgetDay
	limBudgetMonth
	numLimits
)

var limitNames = [numLimits]string{"rpm_key", "tpm_key", "rpm_team", "tpm_team", "tokens_day", "tokens_month", "budget_day", "budget_month"}

// tokenLimits are the limits counted in tokens, settled with the usage.
var tokenLimits = []int{limTPMKey, limTPMTeam, limTokensDay, limTokensMonth}

// reservation is what a call charged its limits before it ran.
type reservation struct {
	limits     []ratelimit.Limit // those set, in the order of limRPMKey...
	kinds      []int             // limits[i] is of kind kinds[i]
	stamp      int64
	tokens     int64
	costMicros int64

	backend       *llmBackend // the backend whose own quota was charged, if any
	backendLimits []ratelimit.Limit
	backendStamp  int64
}

// budgetScale turns currency into the integer micro-units the counters hold.
const budgetScale = 1e6

// llmReserve charges the call's estimate to the caller's key and team
// limits; false means refused (429 over a per-minute limit, 403 over a
// period quota or budget). It sets the x-ratelimit-* headers.
func (g *Gateway) llmReserve(c *llmCall, lt *llmTable) bool {
	m := c.model
	choices := max(c.est.Choices, 1)
	tok := int64(c.est.Prompt + c.est.MaxCompletion*choices)
	costMicros := int64(math.Ceil((float64(c.est.Prompt)/1000*m.maxInCost + float64(c.est.MaxCompletion*choices)/1000*m.maxOutCost) * budgetScale))
	key := c.keyID
	if key == "" {
		key = "principal:" + c.principal
	}
	var tl LLMTeamLimits
	if p := lt.teams[c.team]; p != nil {
		tl = *p
	}
	name := m.cfg.Name
	teamName := c.team
	limits := make([]ratelimit.Limit, numLimits)
	limits[limRPMKey] = ratelimit.Limit{Key: "llm:key:" + name + ":" + key, Max: m.cfg.RequestsPerMinutePerKey, Amount: 1, Window: time.Minute, Name: "requests per minute (RPM) for this key on model " + name}
	limits[limTPMKey] = ratelimit.Limit{Key: "llm:key:" + name + ":" + key + ":tokens", Max: m.cfg.TokensPerMinutePerKey, Amount: tok, Window: time.Minute, Name: "tokens per minute (TPM) for this key on model " + name}
	limits[limRPMTeam] = ratelimit.Limit{Key: "llm:team:" + teamName, Max: tl.RequestsPerMinute, Amount: 1, Window: time.Minute, Name: "requests per minute (RPM) for team " + teamName}
	limits[limTPMTeam] = ratelimit.Limit{Key: "llm:team:" + teamName + ":tokens", Max: tl.TokensPerMinute, Amount: tok, Window: time.Minute, Name: "tokens per minute (TPM) for team " + teamName}
	limits[limTokensDay] = ratelimit.Limit{Key: "llm:team:" + teamName + ":tokens", Max: tl.TokensPerDay, Amount: tok, Period: ratelimit.Day, Name: "daily token quota of team " + teamName}
	limits[limTokensMonth] = ratelimit.Limit{Key: "llm:team:" + teamName + ":tokens", Max: tl.TokensPerMonth, Amount: tok, Period: ratelimit.Month, Name: "monthly token quota of team " + teamName}
	limits[limBudgetDay] = ratelimit.Limit{Key: "llm:team:" + teamName + ":cost", Max: int64(tl.BudgetPerDay * budgetScale), Amount: costMicros, Period: ratelimit.Day, Name: "daily budget of team " + teamName}
	limits[limBudgetMonth] = ratelimit.Limit{Key: "llm:team:" + teamName + ":cost", Max: int64(tl.BudgetPerMonth * budgetScale), Amount: costMicros, Period: ratelimit.Month, Name: "monthly budget of team " + teamName}
	// Only the limits that are set go to the counter (fewer keys, and the
	// memory counter's allocation-free path); kinds maps them back.
	active := limits[:0:0]
	var kinds []int
	for i := range limits {
		if limits[i].Max > 0 {
			active = append(active, limits[i])
			kinds = append(kinds, i)
		}
	}
	if len(active) == 0 {
		return true
	}
	now := g.now()
	d, err := g.counter.Reserve(c.r.Context(), now, active)
	if err != nil {
		// Availability over strictness: a call is not refused because the
		// shared counters (Redis) are unreachable; it is counted as let
		// through unlimited and logged.
		g.metrics.llmLimitErrs.Inc()
		g.log.Warn("LLM limits could not be checked; call let through", "request_id", c.rid, "error", err)
		return true
	}
	setRateLimitHeaders(c.w.Header(), active, kinds, d)
	if !d.Allowed {
		i := kinds[d.Refused]
		l := limits[i]
		g.metrics.llmLimited.WithLabelValues(limitNames[i]).Inc()
		unit := "requests"
		if i != limRPMKey && i != limRPMTeam {
			unit = "tokens"
		}
		switch {
		case l.Period == ratelimit.Sliding && l.Amount > l.Max:
			c.fail(http.StatusTooManyRequests, unit, "rate_limit_exceeded",
				"Request too large for "+l.Name+": Limit "+strconv.FormatInt(l.Max, 10)+", Requested "+strconv.FormatInt(l.Amount, 10)+
					". The input or the requested max_tokens must be reduced.", 0)
		case l.Period == ratelimit.Sliding:
			c.fail(http.StatusTooManyRequests, unit, "rate_limit_exceeded",
				"Rate limit reached for "+l.Name+": Limit "+strconv.FormatInt(l.Max, 10)+", Requested "+strconv.FormatInt(l.Amount, 10)+
					". Please try again in "+d.RetryAfter.String()+".", d.RetryAfter)
		default:
			until := now.Add(d.Reset[d.Refused]).UTC().Truncate(time.Second)
			code, what := "token_quota_exceeded", strconv.FormatInt(l.Max, 10)+" tokens"
			if i == limBudgetDay || i == limBudgetMonth {
				code, what = "budget_exceeded", strconv.FormatFloat(float64(l.Max)/budgetScale, 'f', -1, 64)
			}
			c.fail(http.StatusForbidden, "insufficient_quota", code,
				"This call would exceed the "+l.Name+" ("+what+"); it resets at "+until.Format(time.RFC3339)+".", 0)
		}
		return false
	}
	c.reserved = &reservation{limits: active, kinds: kinds, stamp: d.Stamp, tokens: tok, costMicros: costMicros}
	return true
}

// setRateLimitHeaders sets OpenAI's x-ratelimit-* headers from the
// tightest per-minute request and token limits.
func setRateLimitHeaders(h http.Header, limits []ratelimit.Limit, kinds []int, d ratelimit.Decision) {
	tightest := func(a, b int) int {
		best := -1
		for i, k := range kinds {
			if (k == a || k == b) && (best < 0 || d.Remaining[i] < d.Remaining[best]) {
				best = i
			}
		}
		return best
	}
	if i := tightest(limRPMKey, limRPMTeam); i >= 0 {
		h["X-Ratelimit-Limit-Requests"] = []string{strconv.FormatInt(limits[i].Max, 10)}
		h["X-Ratelimit-Remaining-Requests"] = []string{strconv.FormatInt(max(d.Remaining[i], 0), 10)}
		h["X-Ratelimit-Reset-Requests"] = []string{d.Reset[i].String()}
	}
	if i := tightest(limTPMKey, limTPMTeam); i >= 0 {
		h["X-Ratelimit-Limit-Tokens"] = []string{strconv.FormatInt(limits[i].Max, 10)}
		h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.FormatInt(max(d.Remaining[i], 0), 10)}
		h["X-Ratelimit-Reset-Tokens"] = []string{d.Reset[i].String()}
	}
}

// backendQuota charges the call to the backend's own RPM/TPM; false means
// the backend is out of quota (treated like a 429 from it).
func (g *Gateway) backendQuota(c *llmCall, b *llmBackend) bool {
	if b.cfg.RequestsPerMinute <= 0 && b.cfg.TokensPerMinute <= 0 {
		return true
	}
	tok := int64(c.est.Prompt + c.est.MaxCompletion*max(c.est.Choices, 1))
	limits := []ratelimit.Limit{
		{Key: "llm:backend:" + b.cfg.Name, Max: b.cfg.RequestsPerMinute, Amount: 1, Window: time.Minute, Name: "requests per minute of backend " + b.cfg.Name},
		{Key: "llm:backend:" + b.cfg.Name + ":tokens", Max: b.cfg.TokensPerMinute, Amount: tok, Window: time.Minute, Name: "tokens per minute of backend " + b.cfg.Name},
	}
	d, err := g.counter.Reserve(c.r.Context(), g.now(), limits)
	if err != nil {
		g.metrics.llmLimitErrs.Inc()
		return true
	}
	if !d.Allowed {
		g.metrics.llmLimited.WithLabelValues("backend").Inc()
		return false
	}
	if c.reserved == nil {
		c.reserved = &reservation{tokens: tok}
	}
	c.reserved.backend, c.reserved.backendLimits, c.reserved.backendStamp = b, limits, d.Stamp
	return true
}

// llmSettle corrects the reservation with what the call used: the
// backend's reported usage (or the estimate from the answer's text), and
// nothing for calls no backend answered.
func (g *Gateway) llmSettle(c *llmCall) {
	res := c.reserved
	used := c.prompt + c.completion
	if c.cached || c.status >= 400 && !c.usageKnown {
		used = 0
	}
	usedCost := int64(math.Round(c.cost * budgetScale))
	delta, costDelta := used-res.tokens, usedCost-res.costMicros
	if delta == 0 && costDelta == 0 {
		return
	}
	settle := func(ctx context.Context) {
		now := g.now()
		for i, k := range res.kinds {
			switch {
			case slices.Contains(tokenLimits, k) && delta != 0:
				g.counter.Adjust(ctx, now, res.stamp, res.limits[i], delta)
			case (k == limBudgetDay || k == limBudgetMonth) && costDelta != 0:
				g.counter.Adjust(ctx, now, res.stamp, res.limits[i], costDelta)
			}
		}
		if res.backend != nil && res.backend == c.backend && res.backendLimits[1].Max > 0 && delta != 0 {
			g.counter.Adjust(ctx, now, res.backendStamp, res.backendLimits[1], delta)
		}
	}
	if g.counterLocal {
		settle(context.Background())
		return
	}
	// A shared counter is a network round trip: never on the caller's time.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		settle(ctx)
	}()
}
