package storage

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// maxGroupCommit bounds how many writes share one transaction.
const maxGroupCommit = 1000

// errRunAlone tells a writer that its fn failed inside a shared transaction: it runs
// again in a transaction of its own, where its error is its own.
var errRunAlone = errors.New("run alone")

// committer is the store's one writer. Every write is queued to it, and it commits
// whatever is queued in one transaction and one fsync: a lone write is committed at
// once, with no window to wait out, and writes arriving while a commit is on disk
// share the next one. So a burst of commands, each committed before its ack, does not
// queue behind one fsync per write, the background's writes included.
type committer struct {
	db   *bolt.DB
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pending []*pendingWrite
	closed  bool
}

type pendingWrite struct {
	fn   func(*bolt.Tx) error
	done chan error
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// write commits fn, possibly together with other writes. fn may run more than once
// (again when another write in its transaction fails), so it must only touch tx and
// set its results afresh on every run.
func (c *committer) write(fn func(*bolt.Tx) error) error {
	w := &pendingWrite{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return bolt.ErrDatabaseNotOpen
	}
	c.pending = append(c.pending, w)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // already woken: it will take this write too
	}
	err := <-w.done
	if errors.Is(err, errRunAlone) {
		return c.db.Update(func(tx *bolt.Tx) error { return safely(fn, tx) })
	}
	return err
}

// close commits what is queued and stops; later writes fail. Closing again waits
// for the first close.
func (c *committer) close() {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	c.mu.Unlock()
	if first {
		close(c.stop)
	}
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
			c.commitPending()
		case <-c.stop:
			c.commitPending()
			return
		}
	}
}

func (c *committer) commitPending() {
	for {
		c.mu.Lock()
		n := min(len(c.pending), maxGroupCommit)
		group := c.pending[:n:n]
		c.pending = c.pending[n:]
		c.mu.Unlock()
		if n == 0 {
			return
		}
		c.commit(group)
	}
}

// commit runs the writes in one transaction. A write whose fn fails is taken out and
// told to run alone, and the others are tried again without it, as bbolt's Batch does.
func (c *committer) commit(group []*pendingWrite) {
	for len(group) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, w := range group {
				if err := safely(w.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, w := range group {
				w.done <- err
			}
			return
		}
		group[failed].done <- errRunAlone
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}

// safely runs fn, turning a panic into an error so that one bad write cannot take the
// store's writer down.
func safely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}
