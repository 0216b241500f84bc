// An independent check of our log's output with Go's golang.org/x/mod/sumdb/note and
// sumdb/tlog (Debian's golang-golang-x-mod-dev), built offline in GOPATH mode.
//
//	prove:  stdin {"leaves": [b64...], "max": N} -> roots, inclusion and consistency
//	        proofs for every tree size up to N, computed by tlog
//	verify: stdin {"note", "log_key", "witness_keys", "index", "leaf", "inclusion_proof",
//	        "old_size", "old_root", "consistency_proof"} -> exit 0 when everything verifies
//	tiles:  stdin {"size", "root", "tiles": {"L/N": b64}, "indexes", "old_sizes"} -> the
//	        inclusion proofs of those indexes and consistency proofs from those sizes,
//	        computed by tlog.TileHashReader from our stored hash tiles (height 8); it
//	        authenticates every tile it reads against the tree of that size and root
//
// x/mod 0.7.0 predates C2SP cosignature/v1, so cosignatures are checked here directly
// from the tlog-cosignature spec with crypto/ed25519.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func b64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		fail("base64: %v", err)
	}
	return b
}

func hash(s string) tlog.Hash {
	var h tlog.Hash
	b := b64(s)
	if len(b) != len(h) {
		fail("hash of %d bytes", len(b))
	}
	copy(h[:], b)
	return h
}

func enc(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

func prove() {
	var in struct {
		Leaves []string `json:"leaves"`
		Max    int64    `json:"max"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
	}
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, leaf := range in.Leaves {
		hs, err := tlog.StoredHashes(int64(i), b64(leaf), hr)
		if err != nil {
			fail("StoredHashes: %v", err)
		}
		stored = append(stored, hs...)
	}
	out := map[string]interface{}{}
	roots := map[string]string{}
	inclusion := map[string][]string{}
	consistency := map[string][]string{}
	for t := int64(1); t <= in.Max; t++ {
		th, err := tlog.TreeHash(t, hr)
		if err != nil {
			fail("TreeHash: %v", err)
		}
		roots[strconv.FormatInt(t, 10)] = enc(th)
		for n := int64(0); n < t; n++ {
			rp, err := tlog.ProveRecord(t, n, hr)
			if err != nil {
				fail("ProveRecord: %v", err)
			}
			key := fmt.Sprintf("%d,%d", n, t)
			inclusion[key] = []string{}
			for _, h := range rp {
				inclusion[key] = append(inclusion[key], enc(h))
			}
			if n > 0 {
				tp, err := tlog.ProveTree(t, n, hr)
				if err != nil {
					fail("ProveTree: %v", err)
				}
				consistency[key] = []string{}
				for _, h := range tp {
					consistency[key] = append(consistency[key], enc(h))
				}
			}
		}
	}
	out["roots"], out["inclusion"], out["consistency"] = roots, inclusion, consistency
	json.NewEncoder(os.Stdout).Encode(out)
}

// cosigned returns the names of the witness keys whose cosignature/v1 lines verify.
func cosigned(msg []byte, witnessKeys []string) []string {
	cut := bytes.LastIndex(msg, []byte("\n\n"))
	body, sigs := msg[:cut+1], string(msg[cut+2:])
	var names []string
	for _, vkey := range witnessKeys {
		parts := strings.SplitN(vkey, "+", 3)
		key := b64(parts[2])
		if len(key) != 33 || key[0] != 0x04 {
			fail("witness key %q is not a cosignature/v1 Ed25519 key", vkey)
		}
		id := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
		if fmt.Sprintf("%x", id[:4]) != parts[1] {
			fail("witness key %q: key id mismatch", vkey)
		}
		for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
			fields := strings.Split(strings.TrimPrefix(line, "\u2014 "), " ")
			if len(fields) != 2 || fields[0] != parts[0] {
				continue
			}
			raw := b64(fields[1])
			if len(raw) != 4+8+64 || !bytes.Equal(raw[:4], id[:4]) {
				continue
			}
			ts := binary.BigEndian.Uint64(raw[4:12])
			signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", ts)), body...)
			if !ed25519.Verify(ed25519.PublicKey(key[1:]), signed, raw[12:]) {
				fail("cosignature by %s does not verify", parts[0])
			}
			names = append(names, parts[0])
		}
	}
	return names
}

func verify() {
	var in struct {
		Note             string   `json:"note"`
		LogKey           string   `json:"log_key"`
		WitnessKeys      []string `json:"witness_keys"`
		Index            int64    `json:"index"`
		Leaf             string   `json:"leaf"`
		InclusionProof   []string `json:"inclusion_proof"`
		OldSize          int64    `json:"old_size"`
		OldRoot          string   `json:"old_root"`
		ConsistencyProof []string `json:"consistency_proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
	}
	verifier, err := note.NewVerifier(in.LogKey)
	if err != nil {
		fail("log key: %v", err)
	}
	n, err := note.Open([]byte(in.Note), note.VerifierList(verifier))
	if err != nil {
		fail("note: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		fail("checkpoint body has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	root := hash(lines[2])
	var rp tlog.RecordProof
	for _, h := range in.InclusionProof {
		rp = append(rp, hash(h))
	}
	if err := tlog.CheckRecord(rp, size, root, in.Index, tlog.RecordHash(b64(in.Leaf))); err != nil {
		fail("inclusion: %v", err)
	}
	if in.OldSize > 0 {
		var tp tlog.TreeProof
		for _, h := range in.ConsistencyProof {
			tp = append(tp, hash(h))
		}
		if err := tlog.CheckTree(tp, size, root, in.OldSize, hash(in.OldRoot)); err != nil {
			fail("consistency: %v", err)
		}
	}
	names := cosigned([]byte(in.Note), in.WitnessKeys)
	fmt.Printf("ok origin=%s size=%d signer=%s cosigners=%s\n", lines[0], size,
		n.Sigs[0].Name, strings.Join(names, ","))
}

// storedTiles serves our stored hash tiles to tlog.TileHashReader; a partial tile is
// served as the prefix of the width asked for.
type storedTiles map[string][]byte

func (t storedTiles) Height() int { return 8 }

func (t storedTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		data, ok := t[fmt.Sprintf("%d/%d", tile.L, tile.N)]
		if !ok || len(data) < tile.W*tlog.HashSize {
			return nil, fmt.Errorf("tile %d/%d of width %d is not stored", tile.L, tile.N, tile.W)
		}
		out[i] = data[:tile.W*tlog.HashSize]
	}
	return out, nil
}

func (t storedTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func fromTiles() {
	var in struct {
		Size     int64             `json:"size"`
		Root     string            `json:"root"`
		Tiles    map[string]string `json:"tiles"`
		Indexes  []int64           `json:"indexes"`
		OldSizes []int64           `json:"old_sizes"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
	}
	stored := storedTiles{}
	for key, data := range in.Tiles {
		stored[key] = b64(data)
	}
	hr := tlog.TileHashReader(tlog.Tree{N: in.Size, Hash: hash(in.Root)}, stored)
	th, err := tlog.TreeHash(in.Size, hr)
	if err != nil {
		fail("TreeHash: %v", err)
	}
	inclusion := map[string][]string{}
	for _, n := range in.Indexes {
		rp, err := tlog.ProveRecord(in.Size, n, hr)
		if err != nil {
			fail("ProveRecord %d: %v", n, err)
		}
		key := strconv.FormatInt(n, 10)
		inclusion[key] = []string{}
		for _, h := range rp {
			inclusion[key] = append(inclusion[key], enc(h))
		}
	}
	consistency := map[string][]string{}
	for _, n := range in.OldSizes {
		tp, err := tlog.ProveTree(in.Size, n, hr)
		if err != nil {
			fail("ProveTree %d: %v", n, err)
		}
		key := strconv.FormatInt(n, 10)
		consistency[key] = []string{}
		for _, h := range tp {
			consistency[key] = append(consistency[key], enc(h))
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"root": enc(th), "inclusion": inclusion, "consistency": consistency})
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: verifier prove|verify|tiles < input.json")
	}
	switch os.Args[1] {
	case "prove":
		prove()
	case "verify":
		verify()
	case "tiles":
		fromTiles()
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
