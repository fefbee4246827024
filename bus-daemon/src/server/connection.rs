//! Client connections: accept one, serve its requests in order, and let go of everything it
//! held when it closes (the process exited or was killed).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use bus_proto::fdpass::{self, PeerCred};
use bus_proto::protocol::{ErrorCode, ProtocolError, Request, Response};

use super::dispatch::handle;
use super::registry::{Caller, Client, ClientId, Shared};

/// Register a new connection (refusing it past the caller's limit) and start serving it.
pub(super) fn start(shared: &Arc<Shared>, stream: UnixStream) -> Option<JoinHandle<()>> {
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!(error = %e, "cannot configure a client connection");
        return None;
    }
    let cred = match fdpass::peer_credentials(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials; dropping the connection");
            return None;
        }
    };
    // Supplementary groups: rules that grant a gid admit members by any of their groups.
    let groups = fdpass::peer_groups(&stream).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "no supplementary groups for a client; using its primary gid only");
        Vec::new()
    });
    let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
    {
        let mut state = shared.lock();
        let per_uid = state
            .clients
            .values()
            .filter(|c| c.cred.uid == cred.uid)
            .count();
        let max = state.acl.limits.max_clients_per_uid;
        if per_uid >= max as usize {
            let resp = Response::error(
                ErrorCode::LimitReached,
                format!(
                    "uid {} already has {per_uid} connections open, its limit (limits.max_clients_per_uid = {max}); close some or raise the limit",
                    cred.uid
                ),
            );
            let _ = fdpass::write_frame_with_fds(&stream, &resp, &[]);
            return None;
        }
        let Ok(clone) = stream.try_clone() else {
            return None;
        };
        state.clients.insert(
            id,
            Client {
                cred,
                name: String::new(),
                hello: false,
                stream: clone,
            },
        );
    }
    let caller = Caller { id, cred, groups };
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("shmbusd-client-{id}"))
        .spawn(move || serve(shared, caller, stream))
        .map_err(|e| tracing::warn!(error = %e, "cannot start a connection thread"))
        .ok()
}

fn serve(shared: Arc<Shared>, caller: Caller, stream: UnixStream) {
    let cred: PeerCred = caller.cred;
    tracing::debug!(
        client = caller.id,
        pid = cred.pid,
        uid = cred.uid,
        "client connected"
    );
    loop {
        // Up to two descriptors come with a `Reattach` (the topic's files, handed back); any
        // others are closed at once. The frame is decoded by the protocol's one strict decoder.
        let (request, fds): (Request, Vec<OwnedFd>) = match fdpass::read_frame_with_fds(&stream, 2)
        {
            Ok(r) => r,
            Err(e) if e.is_disconnect() => {
                if !matches!(e, ProtocolError::Closed) {
                    tracing::debug!(client = caller.id, error = %e, "connection lost");
                }
                break;
            }
            Err(e) => {
                // A malformed frame: answer with a typed error and drop the connection,
                // since the stream may be out of step. Everyone else is served on.
                tracing::warn!(client = caller.id, pid = cred.pid, error = %e, "malformed request");
                let _ = fdpass::write_frame_with_fds(&stream, &e.to_response(), &[]);
                break;
            }
        };
        let (response, out) = handle(&shared, &caller, request, fds);
        let out: Vec<i32> = out.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = fdpass::write_frame_with_fds(&stream, &response, &out) {
            tracing::debug!(client = caller.id, error = %e, "cannot answer; dropping the connection");
            break;
        }
        if matches!(response, Response::Stopping) {
            shared.stop.store(true, Ordering::SeqCst);
        }
    }
    gone(&shared, caller.id);
}

/// The client's connection closed: let go of every port it held.
fn gone(shared: &Shared, id: ClientId) {
    let mut state = shared.lock();
    let Some(client) = state.clients.remove(&id) else {
        return;
    };
    if state.stopping {
        return;
    }
    state.release_ports("its client went away", |a| a.client == id);
    tracing::debug!(client = id, name = client.name.as_str(), "client gone");
}
