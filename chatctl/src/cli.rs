//! Command-line definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The exit status table shown in every `--help` (a macro because `concat!` needs literals).
macro_rules! exit_codes {
    () => {
        "Exit status:
  0  ok
  1  other error (doctor: a check failed)
  2  usage error
  3  chatd is not running (no socket answers)
  4  unknown name
  5  --wait ran out while the message was still queued or sent
  6  delivery failed
  7  refused (too large, permission, conflict, a peer's key changed, legacy peer without --legacy, chatd too old)"
    };
}

/// Talk to the local peerchat daemon (chatd): send messages, read the inbox, list peers.
#[derive(Parser, Debug)]
#[command(
    name = "chatctl",
    version,
    after_help = concat!("\
Examples:
  chatctl send pb \"hello there\"          # one message to pb
  echo 'build done' | chatctl send pb     # stdin as one message
  tail -f app.log | chatctl send -l ops   # each line its own message
  chatctl inbox --limit 5                 # the 5 newest messages
  chatctl inbox --follow | grep -m1 urgent
  chatctl --json peers | jq .name

The socket is --socket, else $CHATD_SOCKET, else $XDG_RUNTIME_DIR/peerchat/chatd.sock if it exists,
else /run/chatd/chatd.sock.

", exit_codes!())
)]
pub struct Cli {
    /// Control socket of chatd
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Output one JSON object per line (errors too, as {"error":{"code":…,"message":…}})
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a message to one or more names
    #[command(after_help = concat!("\
Examples:
  chatctl send pb hello world        # the words form one message: \"hello world\"
  chatctl send pb,pc \"to both\"       # one message, two recipients
  chatctl send @ops \"deploy done\"    # every member of group ops
  chatctl send pb < notes.txt        # stdin as one message (also with `-` as the message)
  seq 1000 | chatctl send -l pb      # each line is its own message, pipelined
  tail -f app.log | chatctl send -l pb   # keeps going across chatd restarts (--reconnect-timeout)
  chatctl send --wait=30 pb \"ping\"  # exit 0 once delivered, 5 if still pending after 30 s
  chatctl send --id job-42 pb done   # idempotent: a retry with the same id is not a duplicate

Accepted means chatd has recorded the message; delivery continues in the background and
survives restarts of either side. With --lines, a line that is too long or not UTF-8 is reported
with its line number and skipped, and the exit status is non-zero at the end. If chatd restarts,
--lines and --wait reconnect and carry on: unanswered lines are sent again under the same message
ids (never twice), and a wait goes on waiting.

", exit_codes!()))]
    Send(SendArgs),
    /// Show received messages
    #[command(after_help = concat!("\
Examples:
  chatctl inbox                      # the 20 newest, oldest first
  chatctl inbox --from pa --limit 100
  chatctl inbox --after 41           # everything after sequence number 41
  chatctl inbox --follow             # like tail -f
  chatctl inbox --follow --cursor-file ~/.pc-cursor   # resumable: no gap, no repeat

", exit_codes!()))]
    Inbox(InboxArgs),
    /// Show one conversation (a name, or @GROUP), both directions, oldest first
    #[command(after_help = concat!("\
Each line is [POS] TIME FROM: BODY; a sent message shows each recipient's state. POS is the
message's place in this node's timeline: page back with --before POS (stderr prints the
command for the previous page).

Examples:
  chatctl history pb                 # the newest 50 with pb
  chatctl history @ops --limit 10    # a group conversation (@OWNER/NAME when several match)
  chatctl history pb --before 812    # the page before position 812

", exit_codes!()))]
    History(HistoryArgs),
    /// Search message bodies, sent and received (case-insensitive substring, any script)
    #[command(after_help = concat!("\
Examples:
  chatctl search deploy
  chatctl search 你好 --with pb
  chatctl --json search error --from pc | jq .entry.pos

", exit_codes!()))]
    Search(SearchArgs),
    /// List the names the registry knows, with presence
    #[command(after_help = "Examples:\n  chatctl peers\n  chatctl --json peers")]
    Peers,
    /// Show this node (name, address, registry, uptime, counts), or with ID one sent message
    #[command(after_help = concat!("\
Examples:
  chatctl status                      # this node
  chatctl status 01a2…                # each recipient's state and attempts for one message
  chatctl --json status

", exit_codes!()))]
    Status {
        /// A message id (as printed by `send`)
        #[arg(value_name = "ID")]
        id: Option<String>,
    },
    /// List outgoing messages not yet delivered (queued or sent)
    #[command(after_help = "\
Without --limit every entry is listed (chatd is asked page by page). With --limit, at most N
are, and if more follow, stderr says how many and the --after CURSOR that continues the list.

Examples:
  chatctl outbox
  chatctl --json outbox | jq -r .id
  chatctl outbox --limit 100                # the oldest 100
  chatctl outbox --limit 100 --after 812:pb # the next 100 (the cursor the last call printed)")]
    Outbox {
        /// At most this many entries (default: all)
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue after this entry (a cursor printed by an earlier `outbox --limit`)
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// Stop retrying a message (its undelivered recipients become `cancelled`)
    #[command(after_help = concat!("Examples:\n  chatctl cancel 01a2…\n\n", exit_codes!()))]
    Cancel {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Send a message to every name the registry shows online, except this node (seed names only
    /// when chatd runs with --legacy)
    #[command(after_help = concat!("\
Examples:
  chatctl broadcast \"maintenance at 18:00\"
  echo \"deploy done\" | chatctl broadcast

Each recipient gets its own delivery state; one that fails does not block the others. Names that
are offline (or expired) when the broadcast is made are not recipients. More than 1024 recipients
is refused as a whole (nothing is sent); the message says how many there were.

", exit_codes!()))]
    Broadcast(BroadcastArgs),
    /// Manage groups (named recipient lists kept by the local chatd)
    #[command(subcommand, after_help = concat!("\
Examples:
  chatctl group create ops alice bob
  chatctl group add ops carol
  chatctl send @ops \"disk almost full\"
  chatctl group show ops

", exit_codes!()))]
    Group(GroupCommand),
    /// Chat in a full-screen terminal UI (or line by line with --plain)
    #[command(after_help = crate::chat::keys::help_text())]
    Chat(ChatArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  chatctl completions bash > /etc/bash_completion.d/chatctl\n  chatctl completions zsh > ~/.zfunc/_chatctl\n  chatctl completions fish > ~/.config/fish/completions/chatctl.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show this node's name and identity key fingerprint
    #[command(
        after_help = "Examples:\n  chatctl whoami\n  chatctl --json whoami | jq -r .key\n\nCompare fingerprints with a peer over another channel (in person, by phone) to be sure\nnobody stands in between."
    )]
    Whoami,
    /// Accept the key the registry now reports for NAME in place of the pinned one
    #[command(after_help = concat!("\
Examples:
  chatctl trust pb        # after pb reinstalled, and you checked its new fingerprint with pb

chatd pins each peer's key the first time it sees it. A key that changes without a rotation signed
by the old key stops every send to that name (exit 7) until you run this command. Check the new
fingerprint with the peer's owner first (they run `chatctl whoami`): a key change is also what an
impersonation looks like. Queued messages to NAME are retried right away.

", exit_codes!()))]
    Trust {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Make a new identity key and publish a rotation signed by the old one
    #[command(name = "rotate-key", after_help = concat!("\
Examples:
  chatctl rotate-key

Peers that pinned the old key follow the signed rotation without any action. The old key is kept
next to chatd's key file (--identity), with the extension .key.old: STATE_DIR/chatd.key.old by
default. Delete it once you no longer need it.

", exit_codes!()))]
    RotateKey,
    /// Print every message in and out as JSON lines, in time order
    #[command(after_help = concat!("\
Examples:
  chatctl export > history.jsonl
  chatctl export --with pb --since 7days
  chatctl export --since 2024-05-01T00:00:00Z | jq -r 'select(.dir == \"in\") | .body'

One JSON object per line (always JSON), oldest first by `at`:
  dir        \"in\" (received) or \"out\" (sent by this node)
  at         when: received_at for \"in\", sent_at (accepted by chatd) for \"out\"
  seq        position in this node's inbox (\"in\") or outbox (\"out\")
  id         the message id
  from       the sender (\"in\" only)
  to         the recipients
  body       the text, exactly as received (not made terminal-safe: this is data)
  sent_at, received_at, authenticated   as in `inbox --json` (\"in\")
  recipients each recipient's state, attempts, error, updated_at, final (\"out\")

chatd is asked page by page (1,000 messages a request); --since filters on `at`.

", exit_codes!()))]
    Export {
        /// Only the conversation with NAME: messages from NAME and messages sent to NAME
        #[arg(long, value_name = "NAME")]
        with: Option<String>,
        /// Only messages from this time on: RFC 3339 (2024-05-01T12:00:00Z) or a duration ago
        /// (2h, 7days)
        #[arg(long, value_name = "T")]
        since: Option<String>,
    },
    /// Write a consistent copy of chatd's database to PATH while chatd keeps serving
    #[command(after_help = concat!("\
Examples:
  chatctl backup /var/backups/peerchat/chatd-$(date +%F).db
  chatctl backup --force ./chatd-copy.db

chatd itself writes the copy (as its own user, mode 0600), so PATH is on chatd's host and must
be writable by chatd's user; a relative PATH is taken from chatctl's working directory. An existing
file is refused (exit 7) unless --force; the database's own files always are. The copy is written
under a temporary name and put in place only when complete and on disk.

To restore: stop chatd, put the copy in place of its database (remove the old -wal and -shm
files), start chatd. A chatd started on the copy serves the same messages, outbox and pins. The
identity key is a separate file (--identity): back it up once, like any secret.

", exit_codes!()))]
    Backup {
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
        /// Replace PATH if it exists
        #[arg(long)]
        force: bool,
    },
    /// Check that everything chatd needs works: socket, registry, peer port (answers with our key), database, clock
    #[command(after_help = concat!("\
Examples:
  chatctl doctor
  chatctl --json doctor

Each check prints ok or FAIL with a hint (skip: what it needs is missing). The exit status is 3
if chatd does not answer, else 1 if any check fails.

", exit_codes!()))]
    Doctor,
}

#[derive(clap::Args, Debug)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub message: MessageArgs,
}

/// What `send` and `broadcast` share: the message and how to send it.
#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    /// The message (words are joined with spaces); none or `-` reads stdin
    #[arg(
        value_name = "MESSAGE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub words: Vec<String>,
    /// Send each line of stdin as its own message (blank lines are skipped)
    #[arg(short = 'l', long)]
    pub lines: bool,
    /// Message id for an idempotent send: the same id, recipients and body are accepted only once
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Print the result, then wait until delivered (exit 0), failed (6), or SECS passed (5); no
    /// SECS: no limit
    #[arg(long, value_name = "SECS", num_args = 0..=1, require_equals = true)]
    pub wait: Option<Option<f64>>,
    /// With --lines or --wait: when the connection to chatd drops (chatd restarting), wait up to
    /// SECS for chatd to answer again, then carry on (nothing is lost or sent twice); exit 1 if it
    /// does not come back in time
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub reconnect_timeout: f64,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group, optionally with members
    Create {
        group: String,
        #[arg(value_name = "MEMBER")]
        members: Vec<String>,
    },
    /// Add members to a group
    Add {
        group: String,
        #[arg(value_name = "MEMBER", required = true)]
        members: Vec<String>,
    },
    /// Remove members from a group
    Remove {
        group: String,
        #[arg(value_name = "MEMBER", required = true)]
        members: Vec<String>,
    },
    /// Delete a group
    Delete { group: String },
    /// List groups and their members
    List,
    /// Show one group's members
    Show { group: String },
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Recipients: NAME, @GROUP, or several separated by commas (pa,pb,@ops)
    #[arg(value_name = "TO")]
    pub to: String,
    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The conversation: a name, @GROUP or @OWNER/GROUP
    #[arg(value_name = "NAME|@GROUP")]
    pub with: String,
    /// At most this many messages (default 50, at most 1000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// The messages just before this position
    #[arg(long, value_name = "POS", conflicts_with = "after")]
    pub before: Option<i64>,
    /// The messages just after this position
    #[arg(long, value_name = "POS")]
    pub after: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The text to find
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// Only in this conversation (a name, @GROUP or @OWNER/GROUP)
    #[arg(long, value_name = "NAME|@GROUP")]
    pub with: Option<String>,
    /// Only messages from this name (this node's own: only sent ones)
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// At most this many hits (default 50, at most 1000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Only hits before this position (the next page)
    #[arg(long, value_name = "POS")]
    pub before: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Only messages from this name
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// How many messages: the newest N, oldest first (default 20; 10 with --follow); with
    /// --after, the first N after it
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only messages after this sequence number (exclusive)
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    /// Resume after the sequence number kept in this file, and update it (atomically) after
    /// every printed message
    #[arg(long, value_name = "FILE")]
    pub cursor_file: Option<std::path::PathBuf>,
    /// Keep printing new messages as they arrive (starts with the newest 10, or --after);
    /// reconnects by itself when chatd restarts
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only messages after each conversation's read position (which stays where it is)
    #[arg(long, conflicts_with_all = ["follow", "after", "cursor_file", "from", "limit"])]
    pub unread: bool,
}

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// Open this conversation first: NAME or @GROUP
    #[arg(value_name = "NAME|@GROUP")]
    pub with: Option<String>,
    /// Line by line instead of full screen (also when stdin or stdout is not a terminal):
    /// messages print as lines; each input line `NAME MESSAGE`, `@GROUP MESSAGE` or `MESSAGE`
    /// (to the last conversation) is sent; exit status 1 at EOF if a line was not accepted
    #[arg(long)]
    pub plain: bool,
    /// Do not ring the terminal bell on new messages (Ctrl+G toggles it)
    #[arg(long)]
    pub no_bell: bool,
}
