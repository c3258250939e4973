//! Moving bytes in and out of the store: `put` (a local file or standard
//! input, written under PATH._COPYING_ and renamed when whole), `get` and
//! `cat` (to a local file or standard output), and `append` (each line of
//! standard input as one record), with progress on standard error.

use std::io::{BufRead as _, Write as _};

use anyhow::{Context as _, bail};

use super::{GetArgs, PathArgs, PutArgs, client, path};
use crate::progress::print_stdout;

/// How much a command reads or writes per call.
const PIECE_BYTES: usize = 4 << 20;

pub(super) async fn put(args: PutArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let copying = path(&format!("{target}._COPYING_"))?;
    let mut input: Box<dyn std::io::Read> = if args.local.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.local)
                .with_context(|| format!("cannot open {}", args.local.display()))?,
        )
    };
    let total = std::fs::metadata(&args.local).map(|m| m.len()).ok();
    let mut client = client(&args.masters)?;
    // A copy left by an interrupted put is replaced.
    let _ = client.delete(&copying, false).await;
    client.create(&copying).await?;
    let bar = crate::progress::bytes_bar(total, args.masters.json);
    let mut buffer = vec![0u8; PIECE_BYTES];
    let mut writer = client.writer(&copying, 0);
    loop {
        let n = read_full(&mut input, &mut buffer)
            .with_context(|| format!("reading {}", args.local.display()))?;
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n]).await?;
        bar.set_position(writer.acknowledged());
    }
    let offset = writer.finish().await?;
    bar.set_position(offset);
    client.rename(&copying, &target, true).await?;
    bar.finish_and_clear();
    if args.masters.json {
        print_stdout(&format!(
            "{}\n",
            serde_json::json!({"path": target.as_str(), "bytes": offset})
        ));
    } else {
        eprintln!("wrote {offset} bytes to {target}");
    }
    Ok(())
}

/// Fills `buffer` as far as the input goes; returns how much it read.
fn read_full(input: &mut dyn std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match input.read(&mut buffer[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

pub(super) async fn get(args: GetArgs) -> anyhow::Result<()> {
    let source = path(&args.path)?;
    let mut client = client(&args.masters)?;
    let entry = client.stat(&source).await?;
    if entry.directory {
        bail!("{source} is a directory; `cairn fs ls {source}` lists it");
    }
    let mut output: Box<dyn std::io::Write> = if args.local.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.local)
                .with_context(|| format!("cannot create {}", args.local.display()))?,
        )
    };
    let bar = crate::progress::bytes_bar(None, args.masters.json);
    let mut reader = client.reader(&source, 0, u64::MAX);
    while let Some(bytes) = reader.next().await? {
        output.write_all(&bytes).context("writing the output")?;
        bar.inc(bytes.len() as u64);
    }
    output.flush().context("writing the output")?;
    bar.finish_and_clear();
    Ok(())
}

pub(super) async fn append(args: PathArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let mut client = client(&args.masters)?;
    if client.stat(&target).await.is_err() {
        client.create(&target).await?;
    }
    let mut count = 0u64;
    for line in std::io::stdin().lock().split(b'\n') {
        let mut record = line.context("reading standard input")?;
        record.push(b'\n');
        let offset = client.append(&target, &record).await?;
        count += 1;
        if args.masters.json {
            print_stdout(&format!("{}\n", serde_json::json!({"offset": offset})));
        }
    }
    if !args.masters.json {
        eprintln!("appended {count} records to {target}");
    }
    Ok(())
}
