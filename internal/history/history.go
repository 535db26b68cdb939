// Package history defines the JetStream stream behind resumable delivery
// (--resume): its name, subjects and limits, and the check that the stream
// a gateway or router finds is the one it expects (creating it when it is
// missing). The gateway's replay and gap detection, and the router's
// acknowledged publishes, live in their packages; this one only holds what
// both must agree on.
//
// The stream captures every user subject ("<prefix>.user.*"), the
// broadcast subject ("<prefix>.broadcast") and every topic subject
// ("<prefix>.topic.>"): services go on publishing on plain NATS subjects
// and the stream stores what they publish. It
// republishes each stored message to "<prefix>.live." followed by its
// subject without the prefix ("wsfleet.user.bob" → "wsfleet.live.user.bob")
// with the headers Nats-Sequence (its stream sequence) and
// Nats-Last-Sequence (the sequence of the previous message stored on the
// same original subject, 0 if none is stored), so a gateway subscribed to
// the live subjects delivers each message with its sequence and sees a
// break in a subject's chain without asking the stream (nats-server
// stream.go, processJetStreamMsg). Direct gets (allow_direct) serve the
// replays.
package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

// Defaults of [Config]; each is also the default of its flag.
const (
	// DefaultTTL is how long a message stays in history (--history-ttl).
	DefaultTTL = 24 * time.Hour
	// DefaultMaxPerUser is how many messages history keeps per user subject,
	// and for the broadcast subject (--history-max-per-user).
	DefaultMaxPerUser = 100
	// DefaultMaxBytes bounds the whole stream (--history-max-bytes); past
	// it the oldest messages go first.
	DefaultMaxBytes = 1 << 30
	// DefaultReplicas is the stream's replica count (--history-replicas).
	DefaultReplicas = 1
	// DefaultStorage is where the stream keeps messages (--history-storage).
	DefaultStorage = "file"
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a
	// publish repeating one within it is stored once.
	DuplicateWindow = 2 * time.Minute
)

// Errors of [Ensure].
var (
	// ErrNoJetStream: the NATS server (or the account) has no JetStream.
	ErrNoJetStream = errors.New("--resume needs JetStream, and the NATS server has none (start nats-server with -js, or jetstream: enabled in the Helm chart)")
	// ErrIncompatible: the stream exists with another configuration.
	ErrIncompatible = errors.New("the history stream exists with another configuration")
)

// Config is the history stream's configuration. The zero value of a field
// means its default.
type Config struct {
	// Prefix is the subject prefix. Default "wsfleet".
	Prefix string
	// TTL is how long a message is kept. Default 24h.
	TTL time.Duration
	// MaxPerUser is how many messages are kept per user subject (and for
	// the broadcast subject, and per topic subject). Default 100.
	MaxPerUser int
	// MaxBytes bounds the stream's size. Default 1 GiB.
	MaxBytes int
	// Replicas is the stream's replica count (1, 3 or 5 on a cluster).
	// Default 1.
	Replicas int
	// Storage is "file" or "memory". Default "file".
	Storage string
}

// SetDefaults fills the zero fields.
func (c *Config) SetDefaults() {
	if c.Prefix == "" {
		c.Prefix = "wsfleet"
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxPerUser == 0 {
		c.MaxPerUser = DefaultMaxPerUser
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Storage == "" {
		c.Storage = DefaultStorage
	}
}

// RegisterFlags adds the --history-* flags (a gateway's and a router's
// must agree: see [Ensure]).
func (c *Config) RegisterFlags(fs *flagenv.Set) {
	fs.Duration(&c.TTL, "history-ttl", DefaultTTL, "with --resume: how long history keeps a message")
	fs.Int(&c.MaxPerUser, "history-max-per-user", DefaultMaxPerUser, "with --resume: messages history keeps per user (and for broadcasts, and per topic); older ones go first")
	fs.Int(&c.MaxBytes, "history-max-bytes", DefaultMaxBytes, "with --resume: the history stream's size limit in bytes; past it the oldest messages go first")
	fs.Int(&c.Replicas, "history-replicas", DefaultReplicas, "with --resume: replicas of the history stream (3 on a 3-server NATS cluster)")
	fs.String(&c.Storage, "history-storage", DefaultStorage, "with --resume: where the history stream keeps messages: file or memory")
	fs.Positive("history-ttl", "history-max-per-user", "history-max-bytes", "history-replicas")
}

// Validate names the flag of a bad field.
func (c *Config) Validate() error {
	switch {
	case c.TTL < time.Second:
		return fmt.Errorf("--history-ttl: %s is less than a second", c.TTL)
	case c.MaxPerUser < 1:
		return fmt.Errorf("--history-max-per-user: %d is not a positive count", c.MaxPerUser)
	case c.MaxBytes < 1<<20:
		return fmt.Errorf("--history-max-bytes: %d is less than 1 MiB", c.MaxBytes)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("--history-replicas: %d is not 1 to 5", c.Replicas)
	case c.Storage != "file" && c.Storage != "memory":
		return fmt.Errorf("--history-storage: %q is neither file nor memory", c.Storage)
	}
	return nil
}

// StreamName is the history stream's name for a subject prefix: the prefix
// with dots as underscores, then "_history" ("wsfleet_history").
func StreamName(prefix string) string {
	return strings.ReplaceAll(prefix, ".", "_") + "_history"
}

// LivePrefix is what replaces the prefix of a stored message's subject when
// the stream republishes it: "<prefix>.live.".
func LivePrefix(prefix string) string { return prefix + ".live." }

// Subjects are the subjects the stream captures: the users', the
// broadcast's and the topics'.
func Subjects(prefix string) []string {
	return []string{prefix + ".user.*", prefix + ".broadcast", prefix + ".topic.>"}
}

// StreamConfig is the stream's JetStream configuration.
func (c Config) StreamConfig() jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if c.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:              StreamName(c.Prefix),
		Description:       "wsfleet history: user, broadcast and topic messages, for resumable delivery",
		Subjects:          Subjects(c.Prefix),
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.TTL,
		MaxMsgsPerSubject: int64(c.MaxPerUser),
		MaxBytes:          int64(c.MaxBytes),
		MaxMsgs:           -1,
		Storage:           storage,
		Replicas:          c.Replicas,
		Duplicates:        DuplicateWindow,
		AllowDirect:       true,
		RePublish: &jetstream.RePublish{
			Source:      c.Prefix + ".>",
			Destination: LivePrefix(c.Prefix) + ">",
		},
	}
}

// Ensure creates the stream when it is missing and otherwise checks that
// it has the configuration c asks for. A difference is an error wrapping
// ErrIncompatible that names each differing setting, its flag and both
// values: every gateway and router of a deployment must agree, and the
// stream is changed on purpose (nats stream edit), never by whichever
// process starts last.
//
// Processes that start together on a fresh cluster create the stream at
// once. nats-server proposes an equal create that races another and may
// never answer it, so each attempt has ensureAttempt; one that times out is
// made again (the stream is then found) until ctx is done.
func Ensure(ctx context.Context, nc *nats.Conn, c Config) (*jetstream.StreamInfo, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	want := c.StreamConfig()
	for {
		actx, cancel := context.WithTimeout(ctx, ensureAttempt)
		info, err := ensureOnce(actx, js, c, want)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return info, err
		}
	}
}

// ensureAttempt bounds one attempt of Ensure.
const ensureAttempt = 2 * time.Second

func ensureOnce(ctx context.Context, js jetstream.JetStream, c Config, want jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, ErrNoJetStream
		}
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	st, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, want.Name) // another process created it meanwhile
		} else if err == nil {
			return st.CachedInfo(), nil
		}
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == 10028 /* insufficient resources */) {
			return nil, fmt.Errorf("history stream %s: %w: --history-max-bytes %d (%s storage) is more than the NATS server's JetStream may hold (its max_memory_store / max_file_store): lower it or raise those", want.Name, err, c.MaxBytes, c.Storage)
		}
		return nil, fmt.Errorf("history stream %s: %w", want.Name, err)
	}
	info := st.CachedInfo()
	if missing := missingSubjects(want.Subjects, info.Config.Subjects); len(missing) > 0 && len(Diff(want, withSubjects(info.Config, want.Subjects))) == 0 {
		// A stream made by an earlier version, which did not capture the
		// topics: the subjects are added (an update JetStream applies in
		// place, keeping every message), everything else being as asked.
		cfg := withSubjects(info.Config, append(slices.Clone(info.Config.Subjects), missing...))
		st, err = js.UpdateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("history stream %s: adding the subjects %s: %w", want.Name, strings.Join(missing, ", "), err)
		}
		info = st.CachedInfo()
	}
	if diffs := Diff(want, info.Config); len(diffs) > 0 {
		return nil, fmt.Errorf("%w: stream %s has %s; set the same values on every gateway and router, or change the stream (nats stream edit %s)",
			ErrIncompatible, want.Name, strings.Join(diffs, ", "), want.Name)
	}
	return info, nil
}

// missingSubjects lists the subjects of want that have lacks.
func missingSubjects(want, have []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// withSubjects is cfg with its subjects replaced.
func withSubjects(cfg jetstream.StreamConfig, subjects []string) jetstream.StreamConfig {
	cfg.Subjects = slices.Clone(subjects)
	return cfg
}

// Diff lists how have differs from want in the settings history relies on
// ("max_age 1h0m0s, --history-ttl says 24h0m0s").
func Diff(want, have jetstream.StreamConfig) []string {
	var d []string
	add := func(field, flag string, w, h any) {
		if fmt.Sprint(w) != fmt.Sprint(h) {
			if flag != "" {
				d = append(d, fmt.Sprintf("%s %v, %s says %v", field, h, flag, w))
			} else {
				d = append(d, fmt.Sprintf("%s %v, not %v", field, h, w))
			}
		}
	}
	// More subjects than asked (a later version's, say) are no
	// difference: every subject asked for is captured.
	if missing := missingSubjects(want.Subjects, have.Subjects); len(missing) > 0 {
		d = append(d, fmt.Sprintf("subjects %v, without %v", have.Subjects, missing))
	}
	add("retention", "", want.Retention, have.Retention)
	add("discard", "", want.Discard, have.Discard)
	add("allow_direct", "", want.AllowDirect, have.AllowDirect)
	rp := func(r *jetstream.RePublish) string {
		if r == nil {
			return "none"
		}
		return r.Source + " → " + r.Destination + fmt.Sprintf(" headers_only=%v", r.HeadersOnly)
	}
	add("republish", "", rp(want.RePublish), rp(have.RePublish))
	add("max_age", "--history-ttl", want.MaxAge, have.MaxAge)
	add("max_msgs_per_subject", "--history-max-per-user", want.MaxMsgsPerSubject, have.MaxMsgsPerSubject)
	add("max_bytes", "--history-max-bytes", want.MaxBytes, have.MaxBytes)
	add("replicas", "--history-replicas", want.Replicas, have.Replicas)
	add("storage", "--history-storage", want.Storage, have.Storage)
	add("duplicate_window", "", want.Duplicates, have.Duplicates)
	return d
}
