package dataplane

// Changes tells a feature whether the table lacks some of its changes: every
// change bumps a generation, a contribution carries the generation it saw,
// and its successful commit marks that generation programmed. A change made
// while a transaction runs keeps the feature pending. The zero value has
// nothing pending; the feature's own mutex guards it.
type Changes struct{ gen, programmed uint64 }

// Bump records a change and returns its generation.
func (c *Changes) Bump() uint64 {
	c.gen++
	return c.gen
}

// Pending returns the current generation, and whether the table lacks it.
func (c *Changes) Pending() (gen uint64, pending bool) { return c.gen, c.gen != c.programmed }

// Programmed reports whether generation gen is in the table.
func (c *Changes) Programmed(gen uint64) bool { return gen <= c.programmed }

// Commit marks generation gen programmed.
func (c *Changes) Commit(gen uint64) { c.programmed = max(c.programmed, gen) }
