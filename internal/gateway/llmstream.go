package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/plinth-dev/plinth/internal/llm/tokens"
)

// relayStream passes a Server-Sent Events answer to the caller event by
// event, flushing after each, with nothing buffered beyond one event. It
// reads the usage the backend reports in its last chunk; when the gateway
// asked for that chunk and the caller did not, the chunk is not passed on.
// Without a usage report, completion tokens are counted from the deltas.
func (c *llmCall) relayStream(resp *upResponse, began time.Time) {
	g := c.g
	flush := func() {}
	if f, ok := c.w.(http.Flusher); ok {
		flush = f.Flush
	}
	flush() // the head goes out now: the caller's SDK starts its stream
	br := bufio.NewReaderSize(resp, 16<<10)
	var event []byte
	var text []byte // the text chunks, counted if no usage is reported
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			event = append(event, line...)
			continue
		}
		event = append(event, line...)
		if err == nil && len(bytes.TrimRight(line, "\r\n")) > 0 {
			continue // the event goes on
		}
		if len(event) > 0 {
			keep := true
			if data, ok := sseData(event); ok && !bytes.Equal(data, []byte("[DONE]")) {
				switch {
				case bytes.Contains(data, []byte(`"usage":{`)):
					var u usageBody
					if json.Unmarshal(data, &u) == nil && u.Usage != nil {
						c.prompt, c.completion, c.usageKnown = u.Usage.PromptTokens, u.Usage.CompletionTokens, true
						if !c.wantUsage && len(u.Choices) == 0 {
							keep = false
						}
					}
				case hasText(data):
					if first {
						c.ttft = g.now().Sub(c.start)
						g.metrics.llmTTFT.WithLabelValues(c.modelName, c.backend.cfg.Name).Observe(c.ttft.Seconds())
						first = false
					}
					// Kept raw, parsed only if the backend never reports
					// usage: most streams end with a usage chunk.
					if len(text) < 4<<20 {
						text = append(text, data...)
						text = append(text, '\n')
					}
				}
			}
			if keep {
				n, werr := c.w.Write(event)
				c.respBytes += int64(n)
				if werr != nil {
					c.status, c.errMsg = StatusClientClosed, "caller went away during the stream"
					break
				}
				flush()
			}
			event = event[:0]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if c.r.Context().Err() != nil {
				c.status, c.errMsg = StatusClientClosed, "caller went away during the stream"
			} else {
				c.errMsg = "the backend's stream broke off: " + err.Error()
				c.status = http.StatusBadGateway // metered as failed
				c.abort = true
			}
			break
		}
	}
	if !c.usageKnown {
		c.prompt = int64(c.est.Prompt)
		c.completion = int64(countStreamText(c.modelName, text))
	}
}

// hasText reports a chunk carrying generated text (a non-empty content or
// text field), not the role chunk that opens a chat stream.
func hasText(data []byte) bool {
	for _, field := range [][]byte{[]byte(`"content":"`), []byte(`"text":"`)} {
		for rest := data; ; {
			i := bytes.Index(rest, field)
			if i < 0 {
				break
			}
			rest = rest[i+len(field):]
			if len(rest) > 0 && rest[0] != '"' {
				return true
			}
		}
	}
	return false
}

// countStreamText counts the tokens generated in a stream's chunks (one
// JSON document per line).
func countStreamText(model string, chunks []byte) int {
	var text []byte
	for _, line := range bytes.Split(chunks, []byte{'\n'}) {
		var u usageBody
		if len(line) == 0 || json.Unmarshal(line, &u) != nil {
			continue
		}
		for _, ch := range u.Choices {
			if ch.Delta != nil {
				text = append(text, ch.Delta.Content...)
			}
			text = append(text, ch.Text...)
		}
	}
	return tokens.ForModel(model).Count(string(text))
}

// sseData returns the data of an event (its data lines joined), if any.
func sseData(event []byte) ([]byte, bool) {
	var data []byte
	found := false
	for len(event) > 0 {
		i := bytes.IndexByte(event, '\n')
		var line []byte
		if i < 0 {
			line, event = event, nil
		} else {
			line, event = event[:i], event[i+1:]
		}
		line = bytes.TrimRight(line, "\r")
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			v = bytes.TrimPrefix(v, []byte(" "))
			if found {
				data = append(data, '\n')
			}
			data = append(data, v...)
			found = true
		}
	}
	return data, found
}
