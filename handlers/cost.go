package handlers

import (
	"fmt"
	"time"
)

// Prices are the hourly prices in USD by instance type, from HOURLY_PRICES.
type Prices map[string]float64

// Cost is what running this type for d costs, as "$12.50"; "" when no price is set.
func (p Prices) Cost(instanceType string, d time.Duration) string {
	price, ok := p[instanceType]
	if !ok || d < 0 {
		return ""
	}
	return fmt.Sprintf("$%.2f", price*d.Hours())
}

// Estimate is the cost of a whole lifetime, for the approval card: "$160.00 ($20.00/h × 8h)".
func (p Prices) Estimate(instanceType string, lifetime time.Duration) string {
	price, ok := p[instanceType]
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s ($%.2f/h × %s)", p.Cost(instanceType, lifetime), price, FormatDuration(lifetime))
}
