//! The cheapest extra hop a proxy can add: forwards bytes between each accepted connection and
//! one upstream address, a blocking thread per direction, reading nothing. `scripts/bench.sh`
//! runs pgbench through it (TLS end to end, between pgbench and Postgres) to show what any
//! proxy in the path can reach on the machine at hand: the ceiling for pgvalet's figures.
//!
//!     cargo run --release --example tcp_hop -- 127.0.0.1:6435 127.0.0.1:5432

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::{env, process, thread};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: tcp_hop LISTEN_ADDR UPSTREAM_ADDR");
        process::exit(2);
    };
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("tcp_hop: cannot listen on {listen}: {e}");
        process::exit(1);
    });
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        thread::spawn(move || pump(client, server));
        thread::spawn(move || pump(server2, client2));
    }
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
