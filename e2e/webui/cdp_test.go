package webui_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// A tiny Chrome DevTools Protocol client: headless Chromium started by the
// test, one websocket (RFC 6455, client side, text frames only) to its
// browser endpoint, and flattened sessions on page targets. Enough to
// navigate, evaluate, and take screenshots; no dependency.

const chromiumPath = "/usr/bin/chromium"

type browser struct {
	t    testing.TB
	conn net.Conn
	rd   *bufio.Reader
	wmu  sync.Mutex

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
	// events of every session, by session id, for console checks.
	console map[string][]string
	closed  chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser runs headless Chromium on a free debugging port.
func startBrowser(t testing.TB) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (the web UI tests need Debian's chromium: run scripts/install-deps.sh)", chromiumPath)
	}
	ctx, cancel := context.WithCancel(context.Background())
	profile := t.TempDir()
	cmd := exec.CommandContext(ctx, chromiumPath, "--headless=new", "--no-sandbox", "--disable-gpu",
		"--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--user-data-dir="+profile,
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--window-size=1280,900", "about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wsURL := make(chan string, 1)
	go func() {
		defer close(done)
		re := regexp.MustCompile(`DevTools listening on (ws://\S+)`)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
				wsURL <- m[1]
				sent = true
			}
		}
		_ = cmd.Wait()
	}()
	var u string
	select {
	case u = <-wsURL:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not print its DevTools address within 30s")
	}
	b, err := dialCDP(u)
	if err != nil {
		t.Fatalf("connect to chromium: %v", err)
	}
	b.t = t
	t.Cleanup(b.close)
	return b
}

func dialCDP(raw string) (*browser, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, err
	}
	rd := bufio.NewReaderSize(conn, 1<<16)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	b := &browser{conn: conn, rd: rd, waiting: map[int]chan cdpReply{}, console: map[string][]string{}, closed: make(chan struct{})}
	go b.readLoop()
	return b, nil
}

func (b *browser) close() {
	b.conn.Close()
	<-b.closed
}

// writeText sends one masked text frame, as a client must.
func (b *browser) writeText(p []byte) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	h := []byte{0x81}
	switch n := len(p); {
	case n < 126:
		h = append(h, 0x80|byte(n))
	case n < 1<<16:
		h = append(h, 0x80|126, byte(n>>8), byte(n))
	default:
		h = append(h, 0x80|127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	h = append(h, mask...)
	out := make([]byte, len(p))
	for i := range p {
		out[i] = p[i] ^ mask[i%4]
	}
	_, err := b.conn.Write(append(h, out...))
	return err
}

// readMessage reads one whole message (joining continuation frames).
func (b *browser) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(b.rd, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(b.rd, e[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(b.rd, e[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		if n > 256<<20 {
			return nil, fmt.Errorf("websocket frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(b.rd, p); err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, io.EOF
		case 0x9, 0xA: // ping, pong: the browser does not ping clients
			continue
		}
		msg = append(msg, p...)
		if fin {
			return msg, nil
		}
	}
}

func (b *browser) readLoop() {
	defer close(b.closed)
	for {
		m, err := b.readMessage()
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.waiting {
				ch <- cdpReply{Error: &struct {
					Message string `json:"message"`
				}{Message: "connection closed: " + err.Error()}}
				delete(b.waiting, id)
			}
			b.mu.Unlock()
			return
		}
		var env struct {
			ID        int             `json:"id"`
			Method    string          `json:"method"`
			SessionID string          `json:"sessionId"`
			Params    json.RawMessage `json:"params"`
			cdpReply
		}
		if json.Unmarshal(m, &env) != nil {
			continue
		}
		if env.ID != 0 {
			b.mu.Lock()
			ch := b.waiting[env.ID]
			delete(b.waiting, env.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- env.cdpReply
			}
			continue
		}
		switch env.Method {
		case "Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded":
			b.mu.Lock()
			b.console[env.SessionID] = append(b.console[env.SessionID], env.Method+" "+string(env.Params))
			b.mu.Unlock()
		}
	}
}

// call sends a command (to a page session when sid is set) and decodes
// its result into out.
func (b *browser) call(sid, method string, params any, out any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if params == nil {
		msg["params"] = map[string]any{}
	}
	if sid != "" {
		msg["sessionId"] = sid
	}
	p, _ := json.Marshal(msg)
	if err := b.writeText(p); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("%s: no answer within 60s", method)
	}
}

// tab is one page in its own browser context (its own cookie jar).
type tab struct {
	b   *browser
	t   testing.TB
	sid string
}

func (b *browser) newTab(t testing.TB) *tab {
	t.Helper()
	var ctx struct {
		BrowserContextID string `json:"browserContextId"`
	}
	if err := b.call("", "Target.createBrowserContext", map[string]any{"disposeOnDetach": true}, &ctx); err != nil {
		t.Fatal(err)
	}
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank", "browserContextId": ctx.BrowserContextID}, &tgt); err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	tb := &tab{b: b, t: t, sid: att.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		tb.must(m, nil, nil)
	}
	tb.must("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil)
	return tb
}

// on is the tab as seen by test t (a subtest's failures stop the subtest).
func (tb *tab) on(t testing.TB) *tab {
	c := *tb
	c.t = t
	return &c
}

func (tb *tab) must(method string, params, out any) {
	tb.t.Helper()
	if err := tb.b.call(tb.sid, method, params, out); err != nil {
		tb.t.Fatal(err)
	}
}

// eval runs expression in the page and returns its value as JSON.
func (tb *tab) eval(expr string) (json.RawMessage, error) {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := tb.b.call(tb.sid, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return nil, err
	}
	if r.ExceptionDetails != nil {
		return nil, fmt.Errorf("%s: %s %s", expr, r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	return r.Result.Value, nil
}

func (tb *tab) str(expr string) string {
	tb.t.Helper()
	v, err := tb.eval(expr)
	if err != nil {
		tb.t.Fatal(err)
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return string(v)
	}
	return s
}

// navigate loads url and waits until the page has loaded.
func (tb *tab) navigate(u string) {
	tb.t.Helper()
	var r struct {
		ErrorText string `json:"errorText"`
	}
	tb.must("Page.navigate", map[string]any{"url": u}, &r)
	if r.ErrorText != "" {
		tb.t.Fatalf("navigate %s: %s", u, r.ErrorText)
	}
	tb.waitLoaded()
}

// waitLoaded waits for the document in the tab to be complete.
func (tb *tab) waitLoaded() {
	tb.t.Helper()
	tb.waitTrue(15*time.Second, `document.readyState === "complete" && location.href !== "about:blank"`)
}

// waitTrue polls a JavaScript condition until it holds or the deadline.
func (tb *tab) waitTrue(d time.Duration, cond string) time.Duration {
	tb.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	var last error
	for time.Now().Before(deadline) {
		v, err := tb.eval("!!(" + cond + ")")
		if err == nil && string(v) == "true" {
			return time.Since(start)
		}
		last = err
		// Yield to the page between polls: one animation frame.
		_, _ = tb.eval(`new Promise(r => requestAnimationFrame(() => r(1)))`)
	}
	tb.t.Fatalf("within %s, never true in %s: %s (last error %v)", d, tb.str("location.href"), cond, last)
	return 0
}

// submitForm fills fields of the form matching sel and submits it the
// way a person would, by clicking its submit button.
func (tb *tab) submitForm(sel string, fields map[string]string) {
	tb.t.Helper()
	var js strings.Builder
	fmt.Fprintf(&js, "(() => { const f = document.querySelector(%q); if (!f) throw new Error(%q);", sel, "no form "+sel)
	for k, v := range fields {
		fmt.Fprintf(&js, "{ const e = f.elements[%q]; if (e.type === 'checkbox') e.checked = %q === 'on'; else e.value = %q; }", k, v, v)
	}
	js.WriteString("f.querySelector('button[type=submit]').click(); return true; })()")
	before := tb.str("String(performance.timeOrigin)")
	if _, err := tb.eval(js.String()); err != nil {
		tb.t.Fatal(err)
	}
	tb.waitTrue(15*time.Second, fmt.Sprintf(`String(performance.timeOrigin) !== %q && document.readyState === "complete"`, before))
}

// screenshot saves a PNG of the viewport as name under dir and, when
// SWITCHYARD_UI_SHOTS is set, there too.
func (tb *tab) screenshot(dir, name string) string {
	tb.t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	tb.must("Page.captureScreenshot", map[string]any{"format": "png"}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		tb.t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	if d := os.Getenv("SWITCHYARD_UI_SHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			tb.t.Fatal(err)
		}
	}
	return p
}

// consoleProblems lists what the tab's console said about the CSP, and
// uncaught exceptions.
func (tb *tab) consoleProblems() []string {
	tb.b.mu.Lock()
	defer tb.b.mu.Unlock()
	var out []string
	for _, e := range tb.b.console[tb.sid] {
		if strings.Contains(e, "Content Security Policy") || strings.Contains(e, "Content-Security-Policy") ||
			strings.HasPrefix(e, "Runtime.exceptionThrown") {
			out = append(out, e)
		}
	}
	return out
}
