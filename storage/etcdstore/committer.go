package etcdstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// committer commits the audited writes of this process. Each of them
// advances the one audit sequence, so committed one by one they would queue
// behind each other, a round trip to etcd each. Instead the committer takes
// whatever is queued, gives the events their sequence numbers in order, and
// commits the writes together in one transaction that compares everything
// each of them read. When a compare fails, the writes whose reads still hold
// go in the next group as they are, and the others run again on what etcd
// holds now. A lone write is committed at once, with no window to wait out.
type committer struct {
	s *Store

	mu      sync.Mutex
	queue   []*submission
	running bool
	// seq is the last audit sequence number as this committer knows it, and
	// seqMod the revision that wrote it (0: not read yet). Another replica's
	// write makes a group's compare fail, and the group learns the new one.
	seq    uint64
	seqMod int64
}

// submission is one write waiting for its group's commit.
type submission struct {
	t     *txn
	done  chan error
	state atomic.Int32 // queued, sending or abandoned
}

// A submission's states: its caller, giving up, must know whether it was sent.
const (
	queued    int32 = iota // waiting for a group
	sending                // in a group being committed
	abandoned              // its caller gave up: leave it out of groups to come
)

// commit queues t and waits for its outcome, or for ctx to end.
func (c *committer) commit(ctx context.Context, t *txn) error {
	sub := &submission{t: t, done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, sub)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	select {
	case err := <-sub.done:
		return err
	case <-ctx.Done():
		err := fmt.Errorf("commit: %w", ctx.Err())
		if sub.state.CompareAndSwap(queued, abandoned) {
			return c.s.rpcError(ctx, err) // never sent
		}
		sub.state.Store(abandoned) // sent: etcd may have applied it
		return c.s.commitError(ctx, err)
	}
}

// drain commits groups until the queue is empty.
func (c *committer) drain() {
	for {
		c.mu.Lock()
		group, rest := formGroup(c.queue)
		c.queue = rest
		if len(group) == 0 && len(rest) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		retry := slices.DeleteFunc(c.commitGroup(group), func(sub *submission) bool {
			return !sub.state.CompareAndSwap(sending, queued) // its caller left
		})
		if len(retry) > 0 {
			c.mu.Lock()
			c.queue = append(retry, c.queue...)
			c.mu.Unlock()
		}
	}
}

// groupOps bounds a group's operations within etcd's limit per transaction
// (128), with room for the sequence's own put and get.
const groupOps = maxTxnOps - 2

// formGroup takes, in order, the writes that fit one transaction and touch
// no key another of them writes; the rest wait for the next group.
func formGroup(queue []*submission) (group, rest []*submission) {
	written := map[string]bool{}
	read := map[string]int64{}
	thenOps, elseOps := 0, 0
	for _, sub := range queue {
		if sub.state.Load() == abandoned {
			continue
		}
		t := sub.t
		then, orElse := t.opCount()
		fits := len(group) == 0 || (thenOps+then <= groupOps && elseOps+orElse <= groupOps)
		if !fits || conflicts(t, written, read) {
			rest = append(rest, sub)
			continue
		}
		if !sub.state.CompareAndSwap(queued, sending) {
			continue // abandoned meanwhile
		}
		group = append(group, sub)
		thenOps, elseOps = thenOps+then, elseOps+orElse
		for key := range t.writes {
			written[key] = true
		}
		maps.Copy(read, t.read)
	}
	return group, rest
}

// conflicts says whether t writes or reads a key a member of the group
// writes, or read a key at another revision than a member did.
func conflicts(t *txn, written map[string]bool, read map[string]int64) bool {
	for key := range t.writes {
		if written[key] {
			return true
		}
		if _, ok := read[key]; ok {
			return true
		}
	}
	for key, mod := range t.read {
		if written[key] {
			return true
		}
		if other, ok := read[key]; ok && other != mod {
			return true
		}
	}
	return false
}

// opCount is how many operations t adds to a group's transaction, and to
// the reads that tell, after a failed compare, which write lost.
func (t *txn) opCount() (then, orElse int) {
	then = len(t.writes)
	for _, e := range t.events {
		then++
		if e.RequestID != "" {
			then++
		}
	}
	orElse = len(t.read)
	if _, fenced := domain.FenceFrom(t.ctx); fenced {
		orElse++
	}
	return then, orElse
}

// commitGroup commits the group in one transaction, tells each member its
// outcome, and returns the members to try again as they are.
func (c *committer) commitGroup(group []*submission) (retry []*submission) {
	if len(group) == 0 {
		return nil
	}
	ctx, cancel := groupContext(group)
	defer cancel()
	if c.seqMod == 0 {
		if err := c.readSeq(ctx); err != nil {
			finish(group, err)
			return nil
		}
	}
	plan, err := c.plan(group)
	if err != nil {
		finish(group, err)
		return nil
	}
	resp, err := c.s.cli.Txn(ctx).If(plan.cmps...).Then(plan.then...).Else(plan.orElse...).Commit()
	if err != nil {
		c.seqMod = 0 // unknown whether it was written: read it again
		finish(group, c.s.commitError(ctx, err))
		return nil
	}
	if resp.Succeeded {
		if plan.events > 0 {
			c.seq, c.seqMod = c.seq+uint64(plan.events), resp.Header.Revision
		}
		finish(group, nil)
		return nil
	}
	return c.sortOut(group, plan, resp)
}

// groupContext ends at the earliest deadline of the group's members: a
// member's caller gives up when its deadline passes, told that its write did
// not happen or, once sent, that it may have; so the transaction must not be
// sent, or go on, after that.
func groupContext(group []*submission) (context.Context, context.CancelFunc) {
	deadline, _ := group[0].t.ctx.Deadline()
	for _, sub := range group[1:] {
		if d, ok := sub.t.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
	}
	return context.WithDeadline(context.Background(), deadline)
}

// readSeq reads the audit sequence as etcd holds it.
func (c *committer) readSeq(ctx context.Context) error {
	resp, err := c.s.cli.Get(ctx, c.s.keys.auditSeq())
	if err != nil {
		return c.s.rpcError(ctx, fmt.Errorf("read the audit sequence: %w", err))
	}
	c.seq, c.seqMod = 0, -1 // -1: absent, compared as revision 0
	if len(resp.Kvs) > 0 {
		return c.learnSeq(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	}
	return nil
}

func (c *committer) learnSeq(value []byte, mod int64) error {
	seq, err := strconv.ParseUint(string(value), 10, 64)
	if err != nil {
		c.seqMod = 0
		return fmt.Errorf("the audit sequence %q is not a number", value)
	}
	c.seq, c.seqMod = seq, mod
	return nil
}

// groupPlan is a group's transaction: the compares of every member, their
// writes with the events numbered in order, and, for a failed compare, the
// reads of the sequence and of each compared key and fence.
type groupPlan struct {
	cmps         []clientv3.Cmp
	then, orElse []clientv3.Op
	compared     []string // the keys read back in orElse after the sequence, in order
	fences       []domain.Fence
	events       int
}

func (c *committer) plan(group []*submission) (*groupPlan, error) {
	p := &groupPlan{}
	seqKey := c.s.keys.auditSeq()
	p.cmps = append(p.cmps, clientv3.Compare(clientv3.ModRevision(seqKey), "=", max(c.seqMod, 0)))
	seen := map[string]bool{}
	next := c.seq
	for _, sub := range group {
		t := sub.t
		for key, mod := range t.read {
			if !seen[key] {
				seen[key] = true
				p.cmps = append(p.cmps, clientv3.Compare(clientv3.ModRevision(key), "=", mod))
				p.compared = append(p.compared, key)
			}
		}
		if f, fenced := domain.FenceFrom(t.ctx); fenced {
			p.cmps = append(p.cmps, clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Revision))
			p.fences = append(p.fences, f)
		}
		for _, key := range t.order {
			p.then = append(p.then, t.writes[key])
		}
		for _, e := range t.events {
			next++
			e.Seq = next
			data, err := encode(e)
			if err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			p.then = append(p.then, clientv3.OpPut(c.s.keys.auditEvent(e.Seq), string(data)))
			if e.RequestID != "" {
				p.then = append(p.then, clientv3.OpPut(c.s.keys.auditOfRequest(e.RequestID, e.Seq), ""))
			}
		}
	}
	p.events = int(next - c.seq)
	if p.events > 0 {
		p.then = append(p.then, clientv3.OpPut(seqKey, strconv.FormatUint(next, 10)))
	}
	p.orElse = append(p.orElse, clientv3.OpGet(seqKey))
	for _, key := range p.compared {
		p.orElse = append(p.orElse, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	}
	for _, f := range p.fences {
		p.orElse = append(p.orElse, clientv3.OpGet(f.Key, clientv3.WithKeysOnly()))
	}
	return p, nil
}

// sortOut reads a failed group's reasons: the sequence another replica
// advanced is learnt, a member whose fence no longer holds is refused, a
// member whose reads changed runs again, and the rest are returned to go in
// the next group as they are.
func (c *committer) sortOut(group []*submission, p *groupPlan, resp *clientv3.TxnResponse) (retry []*submission) {
	rs := resp.Responses
	seqBefore := c.seqMod
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) == 0 {
		c.seq, c.seqMod = 0, -1
	} else if err := c.learnSeq(kvs[0].Value, kvs[0].ModRevision); err != nil {
		finish(group, err)
		return nil
	}
	current := make(map[string]int64, len(p.compared))
	for i, key := range p.compared {
		if kvs := rs[1+i].GetResponseRange().Kvs; len(kvs) > 0 {
			current[key] = kvs[0].ModRevision
		}
	}
	holds := map[domain.Fence]bool{}
	for i, f := range p.fences {
		kvs := rs[1+len(p.compared)+i].GetResponseRange().Kvs
		holds[f] = len(kvs) > 0 && kvs[0].CreateRevision == f.Revision
	}
	for _, sub := range group {
		t := sub.t
		if f, fenced := domain.FenceFrom(t.ctx); fenced && !holds[f] {
			sub.done <- fmt.Errorf("fence %s@%d: %w", f.Key, f.Revision, domain.ErrFenced)
			continue
		}
		if changed(t.read, current) {
			sub.done <- errLost
			continue
		}
		retry = append(retry, sub)
	}
	if len(retry) == len(group) && c.seqMod == seqBefore {
		// Nothing seen explains the failure: let every member read again.
		finish(retry, errLost)
		return nil
	}
	return retry
}

func changed(read, current map[string]int64) bool {
	for key, mod := range read {
		if current[key] != mod {
			return true
		}
	}
	return false
}

// finish tells every member of a group the same outcome.
func finish(group []*submission, err error) {
	for _, sub := range group {
		sub.done <- err
	}
}
