package leader

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// proxy relays TCP between a replica's etcd client and etcd, and can freeze:
// paused, it holds every byte in both directions, as the network of a
// process stopped with SIGSTOP (or cut off) would. Nothing is lost: on
// resume the held bytes flow on.
type proxy struct {
	listener net.Listener
	target   string
	closed   chan struct{}

	mu    sync.Mutex
	open  chan struct{} // closed while relaying; a fresh one while paused
	conns []net.Conn
}

func startProxy(t *testing.T, targetURL string) *proxy {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{listener: listener, target: strings.TrimPrefix(targetURL, "http://"), closed: make(chan struct{}), open: make(chan struct{})}
	close(p.open)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the endpoint a client uses to reach etcd through the proxy.
func (p *proxy) URL() string { return "http://" + p.listener.Addr().String() }

func (p *proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default: // paused already
	}
}

func (p *proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitOpen() {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitOpen blocks while the proxy is paused; false once it is closed.
func (p *proxy) waitOpen() bool {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	select {
	case <-open:
		return true
	case <-p.closed:
		return false
	}
}

func (p *proxy) close() {
	close(p.closed)
	p.listener.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
