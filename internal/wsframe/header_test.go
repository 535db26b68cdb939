package wsframe

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func TestParseMatchesGobwas(t *testing.T) {
	cases := []struct {
		name string
		h    ws.Header
	}{
		{"empty text", ws.Header{Fin: true, OpCode: ws.OpText}},
		{"short masked", ws.Header{Fin: true, OpCode: ws.OpText, Length: 125, Masked: true, Mask: [4]byte{1, 2, 3, 4}}},
		{"16-bit length", ws.Header{OpCode: ws.OpBinary, Length: 126}},
		{"16-bit max", ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 0xffff, Masked: true, Mask: [4]byte{9, 9, 9, 9}}},
		{"64-bit length", ws.Header{Fin: true, OpCode: ws.OpText, Length: 0x10000}},
		{"rsv bits", ws.Header{Fin: true, Rsv: 0x7, OpCode: ws.OpPing, Length: 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ref bytes.Buffer
			if err := ws.WriteHeader(&ref, tc.h); err != nil {
				t.Fatal(err)
			}
			if got := Append(nil, tc.h); !bytes.Equal(got, ref.Bytes()) {
				t.Fatalf("Append = %x, gobwas writes %x", got, ref.Bytes())
			}
			if s := Size(int(tc.h.Length), tc.h.Masked); s != ref.Len() {
				t.Fatalf("Size = %d, want %d", s, ref.Len())
			}
			// Every prefix shorter than the header asks for more bytes.
			for i := 0; i < ref.Len(); i++ {
				if _, n, err := Parse(ref.Bytes()[:i]); n != 0 || err != nil {
					t.Fatalf("Parse of %d/%d bytes = %d, %v", i, ref.Len(), n, err)
				}
			}
			h, n, err := Parse(append(ref.Bytes(), 0xAA))
			if err != nil || n != ref.Len() || h != tc.h {
				t.Fatalf("Parse = %+v, %d, %v; want %+v, %d", h, n, err, tc.h, ref.Len())
			}
		})
	}
}

func TestParseRejectsLengthMSB(t *testing.T) {
	b := []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}
	if _, _, err := Parse(b); err != ErrLengthMSB {
		t.Fatalf("err = %v", err)
	}
}

func TestAppendClose(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes
	f := AppendClose(nil, 4401, long)
	h, n, err := Parse(f)
	if err != nil || n == 0 {
		t.Fatal(err)
	}
	if h.OpCode != ws.OpClose || !h.Fin || h.Length > 125 {
		t.Fatalf("header %+v", h)
	}
	code, reason := ws.ParseCloseFrameData(f[n:])
	if code != 4401 || !utf8.ValidString(reason) || len(reason) > 123 {
		t.Fatalf("code %d reason %q", code, reason)
	}
}

// FuzzParse feeds arbitrary bytes, whole and split at every point, and checks
// that Parse never panics, agrees with gobwas/ws and never reads past b.
func FuzzParse(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 126, 0x01, 0x00})
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		ref, refErr := ws.ReadHeader(bytes.NewReader(b))
		switch {
		case err != nil:
			if refErr == nil {
				t.Fatalf("Parse failed (%v) where gobwas read %+v", err, ref)
			}
		case n == 0:
			if refErr == nil {
				t.Fatalf("Parse wants more bytes where gobwas read %+v", ref)
			}
		default:
			if refErr != nil || ref != h {
				t.Fatalf("Parse = %+v, gobwas = %+v, %v", h, ref, refErr)
			}
			if n > len(b) || n != Need(b) {
				t.Fatalf("size %d of %d bytes", n, len(b))
			}
			// A non-minimal length encoding is legal to read; writing is
			// always minimal, so the round trip holds for minimal input only.
			if got := Append(nil, h); minimal(h, b) && !bytes.Equal(got, b[:n]) {
				t.Fatalf("Append(Parse(b)) = %x, want %x", got, b[:n])
			}
		}
	})
}

func minimal(h ws.Header, b []byte) bool {
	switch b[1] & 0x7f {
	case 126:
		return h.Length > 125
	case 127:
		return h.Length > 0xffff
	}
	return true
}
