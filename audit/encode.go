package audit

import (
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The batched output's line encoding: the same JSON object zap's JSON encoder writes
// for an event under Caddy's `format json` (level, ts, logger and msg, then the fields
// in order), written straight into the batch's buffer. Values are the bounded fields the
// chain hashed, so a reader's canonical bytes (line.go) are the writer's.

// LoggerName is the logger the audit events are written under.
const LoggerName = "http.handlers.jit.audit"

const hexDigits = "0123456789abcdef"

// appendJSONLine appends the event's line, ending in a newline.
func appendJSONLine(buf []byte, event string, at time.Time, fields []zap.Field) []byte {
	buf = append(buf, `{"level":"info","ts":`...)
	buf = strconv.AppendFloat(buf, float64(at.UnixNano())/1e9, 'f', -1, 64)
	buf = append(buf, `,"logger":"`+LoggerName+`","msg":`...)
	buf = appendJSONString(buf, event)
	for _, f := range fields {
		buf = append(buf, ',')
		buf = appendJSONString(buf, f.Key)
		buf = append(buf, ':')
		buf = appendJSONValue(buf, f)
	}
	return append(buf, '}', '\n')
}

func appendJSONValue(buf []byte, f zap.Field) []byte {
	switch f.Type {
	case zapcore.StringType:
		return appendJSONString(buf, f.String)
	case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type:
		return strconv.AppendInt(buf, f.Integer, 10)
	case zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type:
		return strconv.AppendUint(buf, uint64(f.Integer), 10)
	case zapcore.BoolType:
		return strconv.AppendBool(buf, f.Integer == 1)
	case zapcore.ArrayMarshalerType:
		var sa stringArray
		if err := f.Interface.(zapcore.ArrayMarshaler).MarshalLogArray(&sa); err == nil && !sa.other {
			buf = append(buf, '[')
			for i, s := range sa.items {
				if i > 0 {
					buf = append(buf, ',')
				}
				buf = appendJSONString(buf, s)
			}
			return append(buf, ']')
		}
	}
	// A type the chain does not hash (see unhashable): written as text, so that the
	// line is still JSON and `verify` reports the break.
	return appendJSONString(buf, "unsupported audit field type "+strconv.Itoa(int(f.Type)))
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control
// characters escaped, an invalid UTF-8 byte written as U+FFFD (as validUTF8 hashes it).
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				buf = append(buf, s[start:i]...)
				buf = append(buf, `\ufffd`...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
