//! The WASI imports a plugin can use without ever waiting, linked with synchronous host
//! functions, so a component that imports nothing else is called directly on the worker's
//! thread, with no fiber: Rust plugins, whose standard library imports only these (stdio,
//! environment, exit, random, the clocks' readings and the streams and pollables behind
//! stdio).
//!
//! wasmtime-wasi's own synchronous bindings run their waiting operations (`blocking-write-and-
//! flush`, `pollable.block`, a stream's drop) on a Tokio runtime of their own, which cannot be
//! entered from a worker's. Here they are polled once instead: every stream these imports can
//! reach (the log streams behind stdout and stderr, an empty stdin) is always ready, and one
//! that is not makes the call trap rather than wait. What can wait for real (the monotonic
//! clock's timers, files, sockets) is left out of this linker, so a component that
//! imports them is linked for fibers instead (see `Runtime::load`).

use futures_util::FutureExt;
use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::random::WasiRandom;

/// Adds the never-waiting WASI interfaces to `linker`.
pub fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let l = linker;
    wasmtime_wasi::p2::bindings::io::error::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    poll::add_to_linker::<T, Io>(l, |t| Now(t.ctx().table))?;
    streams::add_to_linker::<T, Io>(l, |t| Now(t.ctx().table))?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    // The monotonic clock's readings, without its timers: a component that imports
    // `subscribe-duration` or `subscribe-instant` (to sleep) does not link here.
    let mut monotonic = l.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    monotonic.func_wrap("now", |mut s: StoreContextMut<'_, T>, (): ()| {
        Ok((monotonic_clock::Host::now(&mut s.data_mut().clocks())?,))
    })?;
    monotonic.func_wrap("resolution", |mut s: StoreContextMut<'_, T>, (): ()| {
        Ok((monotonic_clock::Host::resolution(
            &mut s.data_mut().clocks(),
        )?,))
    })?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

struct Io;

impl HasData for Io {
    type Data<'a> = Now<'a>;
}

/// The resource table, with each waiting operation polled once.
struct Now<'a>(&'a mut ResourceTable);

const WOULD_WAIT: &str =
    "the plugin waited on a stream or pollable during a call made without a fiber";

/// The value of a future that is ready at once; an error if it is not.
fn at_once<F: Future>(future: F) -> wasmtime::Result<F::Output> {
    future
        .now_or_never()
        .ok_or_else(|| wasmtime::format_err!("{WOULD_WAIT}"))
}

/// Like [`at_once`], for a stream operation: not being ready traps.
fn stream_at_once<T>(future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    at_once(future).map_err(StreamError::Trap)?
}

impl poll::Host for Now<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once(async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for Now<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once(async_poll::HostPollable::ready(self.0, pollable))?
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(async_poll::HostPollable::block(self.0, pollable))?
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for Now<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for Now<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        at_once(async_streams::HostOutputStream::drop(self.0, stream))?
    }
    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_at_once(async_streams::HostOutputStream::blocking_write_and_flush(
            self.0, stream, bytes,
        ))
    }
    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_at_once(
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        )
    }
    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_at_once(async_streams::HostOutputStream::blocking_flush(
            self.0, stream,
        ))
    }
    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once(async_streams::HostOutputStream::blocking_splice(
            self.0, dst, src, len,
        ))
    }
}

impl streams::HostInputStream for Now<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once(async_streams::HostInputStream::drop(self.0, stream))?
    }
    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_at_once(async_streams::HostInputStream::blocking_read(
            self.0, stream, len,
        ))
    }
    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once(async_streams::HostInputStream::blocking_skip(
            self.0, stream, len,
        ))
    }
    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(self.0, stream)
    }
}
