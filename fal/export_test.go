package fal

// SetMaxListPages lowers the page bound of List so tests reach it quickly.
func SetMaxListPages(c *Client, n int) { c.maxListPages = n }
