//! A TCP forwarder a test can cut, to stage an outage of whatever is behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `target` while up; when cut, it breaks the connections it carries
/// and refuses new ones, counting each refusal.
pub struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    refused: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (up, watching) = watch::channel(true);
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&refused);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*watching.borrow() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    continue; // dropping the socket refuses the connection
                }
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, refused }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Breaks every carried connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// How many connections were refused while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}
