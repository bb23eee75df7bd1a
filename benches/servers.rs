//! The sandbox against a plain server: the CPU each spends a request.
//!
//! `vipd sandbox` stands in for both vendor APIs in the offline default
//! and in every benchmark, so its cost should be a plain server's, not a
//! large share of what a side by side measures. Both servers run in their
//! own process, on loopback, and answer the same membership read with the
//! same bytes (the plain one replays the sandbox's reply): the sandbox
//! through its routes, accounts and fault dice, the plain one through
//! hyper's HTTP/1 server and a closure that returns the body. A client in
//! this process sends the same requests to each (32 keep-alive
//! connections, reqwest), and each server's CPU (user + system, from
//! `/proc`) is divided by the requests it answered.
//!
//! ```text
//! cargo bench --bench servers          # 20,000 requests to each
//! cargo bench --bench servers -- 5     # five times as many
//! ```

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The plain server: hyper's HTTP/1 connection loop on a multi-thread
/// runtime (a worker a core, as `vipd sandbox` has), every request
/// answered with the file's bytes as JSON. Prints its address.
fn plain_server(body_file: &str) {
    let body = std::fs::read_to_string(body_file).expect("the reply to replay");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("http://{}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut resp = hyper::Response::new(body);
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

/// Sends `n` GETs of `url` over 32 connections; returns the seconds taken.
async fn load(http: &reqwest::Client, url: &str, n: usize) -> f64 {
    let started = Instant::now();
    let per = n / 32;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_owned());
            tokio::spawn(async move {
                for _ in 0..per {
                    let r = http.get(&url).send().await.unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--plain-server") {
        Some(i) => plain_server(&args[i + 1]),
        None => tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(measure(&args)),
    }
}

async fn measure(args: &[String]) {
    let scale: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    let n = 20_000 * scale / 32 * 32;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let (sandbox, upstream) = common::one_account_sandbox(&path);
    let query = "access_token=t0&oauth_consumer_key=101234567&openid=O0&format=json";
    let sandbox_url = format!("{upstream}/user/get_vip_rich_info?{query}");
    let http = reqwest::Client::new();
    let reply = http.get(&sandbox_url).send().await.unwrap();
    let reply = reply.text().await.unwrap();
    assert!(reply.contains("\"ret\":0"), "the sandbox's reply: {reply}");
    let body_file = dir.path().join("reply.json");
    std::fs::write(&body_file, &reply).unwrap();

    let plain = Command::new(std::env::current_exe().unwrap())
        .arg("--plain-server")
        .arg(&body_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut plain = common::Kill(plain);
    let mut line = String::new();
    BufReader::new(plain.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let plain_url = format!("{}/user/get_vip_rich_info?{query}", line.trim());

    println!(
        "{n} membership reads to each server, 32 connections, a {} byte reply",
        reply.len()
    );
    println!("| server | CPU µs a request | requests/s |");
    println!("|---|---|---|");
    let mut per_request = Vec::new();
    for (name, pid, url) in [
        ("vipd sandbox", sandbox.0.id(), &sandbox_url),
        ("plain hyper", plain.0.id(), &plain_url),
    ] {
        load(&http, url, 320).await; // warm the pool and the server
        let before = common::cpu_secs(pid);
        let secs = load(&http, url, n).await;
        let cpu = common::cpu_secs(pid) - before;
        let us = cpu * 1e6 / n as f64;
        per_request.push(us);
        println!("| {name} | {us:.1} | {:.0} |", n as f64 / secs);
    }
    println!(
        "sandbox / plain hyper: {:.2}x the CPU a request",
        per_request[0] / per_request[1]
    );
}
