package idenfytest

import "time"

// MostInWindow is the most of times, sorted, that fall within any window of
// length w: how many calls iDenfy received in its busiest w, to hold a
// fleet's calls to a rate limit as the vendor sees them.
func MostInWindow(times []time.Time, w time.Duration) int {
	most, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}
