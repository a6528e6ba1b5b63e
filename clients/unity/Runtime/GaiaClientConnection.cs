using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// The connection's life: open a socket and wait for `connected`, check a live one with a ping,
    /// notice a dead link (a ping after silence, the socket cut at the pong deadline), and after a
    /// drop resume with last_seq after a jittered, growing delay; close cleanly, stop, or cut.
    /// </summary>
    public sealed partial class GaiaClient
    {
        private readonly Backoff backoff;
        private readonly object gate = new object();
        private readonly SemaphoreSlim connectLock = new SemaphoreSlim(1, 1);
        private Connection current;
        private TaskCompletionSource<bool> opened = Waiters.Source<bool>();
        private int comingBack;          // connects and reconnect loops under way: requests wait for them
        private int reconnectLoop;       // 1 while a reconnect loop runs
        private volatile bool stopped;

        private async Task<JObject> ConnectCore(bool verify, CancellationToken cancel)
        {
            Interlocked.Increment(ref comingBack);
            try
            {
                await connectLock.WaitAsync(cancel).ConfigureAwait(false);
                try
                {
                    var c = current;
                    if (c != null && c.Established && c.Transport.IsOpen)
                    {
                        if (!verify || await Answers(c, cancel).ConfigureAwait(false))
                            return c.Hello.Task.Result;
                        Cut(c, "no pong within " + options.PongTimeout + " on a second ConnectAsync");
                    }
                    return await Open(cancel).ConfigureAwait(false);
                }
                finally
                {
                    connectLock.Release();
                }
            }
            finally
            {
                Interlocked.Decrement(ref comingBack);
            }
        }

        /// <summary>True if the connection answers a ping within PongTimeout.</summary>
        private async Task<bool> Answers(Connection c, CancellationToken cancel)
        {
            var stamp = -Interlocked.Increment(ref nextId);
            var waiter = Waiters.Source<JObject>();
            pings[stamp] = waiter;
            try
            {
                await Send(c, new JObject { { "type", "ping" }, { "timestamp", stamp } }, cancel).ConfigureAwait(false);
                await Waiters.Within(waiter.Task, Waiters.Now + (long)options.PongTimeout.TotalMilliseconds, cancel, "pong")
                    .ConfigureAwait(false);
                return true;
            }
            catch (Exception e) when (!(e is OperationCanceledException))
            {
                return false;
            }
            finally
            {
                TaskCompletionSource<JObject> ignored;
                pings.TryRemove(stamp, out ignored);
            }
        }

        /// <summary>
        /// One handshake, bounded by ConnectTimeout from the first byte to `connected`: the socket and its
        /// WebSocket upgrade, then the `connected` frame. A handshake past its deadline is given up (the
        /// transport cut, a late success closed when it comes) and fails with GaiaConnectionException.
        /// </summary>
        private async Task<JObject> Open(CancellationToken cancel)
        {
            var limit = options.ConnectTimeout;
            var deadline = Waiters.Now + (long)limit.TotalMilliseconds;
            var transport = options.Transport != null ? options.Transport() : new ClientWebSocketTransport();
            var c = new Connection(transport);
            lock (gate)
                current = c;
            var headers = new Dictionary<string, string>();
            if (options.TokenInHeader)
                headers["Authorization"] = "Bearer " + options.Token;
            var uri = BuildUri(LastSeq);
            var where = uri.GetLeftPart(UriPartial.Path);  // never the query: it may hold the token
            var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            Task upgrade = null;
            try
            {
                upgrade = transport.ConnectAsync(uri, headers, stop.Token);
                await Waiters.Within(upgrade, deadline, cancel, "answer to the WebSocket upgrade").ConfigureAwait(false);
            }
            catch (Exception e)
            {
                lock (gate)
                    if (current == c)
                        current = null;
                Abandon(transport, upgrade, stop);
                if (e is OperationCanceledException && cancel.IsCancellationRequested)
                    throw;
                if (e is TimeoutException)
                    throw new GaiaConnectionException("no answer to the WebSocket upgrade from " + where + " within " + limit +
                                                      " (GaiaClientOptions.ConnectTimeout): the attempt was given up", e);
                throw new GaiaConnectionException("could not open the socket to " + where + ": " + e.Message, e);
            }
            stop.Dispose();
            Interlocked.Exchange(ref c.LastHeardTicks, Waiters.Now);
            var reader = Task.Run(() => ReadLoop(c));        // ends with the socket; OnClosed takes it from there
            var heartbeat = Task.Run(() => Heartbeat(c));    // ends when the connection is replaced or closed
            GC.KeepAlive(reader);
            GC.KeepAlive(heartbeat);
            try
            {
                return await Waiters.Within(c.Hello.Task, deadline, cancel, "`connected` frame").ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                Cut(c, "no `connected` frame within " + limit + " (ConnectTimeout)");
                throw new GaiaConnectionException("the WebSocket to " + where + " opened but no `connected` frame came within " +
                                                  limit + " (GaiaClientOptions.ConnectTimeout): the attempt was given up", e);
            }
            catch (OperationCanceledException)
            {
                Cut(c, "connect cancelled");
                throw;
            }
        }

        /// <summary>
        /// Give up a handshake: cut the transport (and cancel its token) now, and dispose of it once its
        /// ConnectAsync ends. Some runtimes (Mono's ClientWebSocket, as in Unity) finish a pending upgrade
        /// neither on cancel nor on abort: the client does not wait for it, and if it still succeeds later,
        /// that socket is cut at once instead of living on as a second session.
        /// </summary>
        private static void Abandon(IWebSocketTransport transport, Task upgrade, CancellationTokenSource stop)
        {
            try { stop.Cancel(); }
            catch (ObjectDisposedException) { }
            try { transport.Abort(); }
            catch (Exception) { }  // a transport that cannot abort while connecting: the continuation below cuts it
            if (upgrade == null)
            {
                transport.Dispose();
                stop.Dispose();
                return;
            }
            upgrade.ContinueWith(t =>
            {
                var ignored = t.Exception;
                try
                {
                    transport.Abort();
                    transport.Dispose();
                }
                catch (Exception) { }
                stop.Dispose();
            }, TaskScheduler.Default);
        }

        private Uri BuildUri(long? lastSeq)
        {
            var baseUrl = options.GatewayUrl.Trim().TrimEnd('/');
            if (baseUrl.StartsWith("http", StringComparison.Ordinal))
                baseUrl = "ws" + baseUrl.Substring(4);
            var query = "experience=" + Uri.EscapeDataString(options.Experience);
            if (!options.TokenInHeader)
                query += "&token=" + Uri.EscapeDataString(options.Token);
            if (lastSeq.HasValue)
                query += "&last_seq=" + lastSeq.Value;
            return new Uri(baseUrl + "/ws/experience?" + query);
        }

        /// <summary>On the socket thread: `connected` established the session; requests waiting for a connection go on.</summary>
        private void OnConnected(Connection c, JObject frame)
        {
            UserId = (string)frame["user_id"];
            ConnectionId = (string)frame["connection_id"];
            backoff.Reset();
            c.Established = true;
            c.Hello.TrySetResult(frame);
            lock (gate)
                if (current == c)
                    opened.TrySetResult(true);
        }

        /// <summary>The dead-link detector: a ping after PingInterval of silence, the socket cut after PongTimeout of it.</summary>
        private async Task Heartbeat(Connection c)
        {
            var interval = (long)options.PingInterval.TotalMilliseconds;
            var deadline = (long)options.PongTimeout.TotalMilliseconds;
            var tick = TimeSpan.FromMilliseconds(Math.Max(20, Math.Min(interval, deadline) / 4));
            while (current == c && !stopped)
            {
                await Task.Delay(tick).ConfigureAwait(false);
                if (current != c || !c.Transport.IsOpen)
                    return;
                var silent = Waiters.Now - Interlocked.Read(ref c.LastHeardTicks);
                if (silent >= deadline)
                {
                    Cut(c, "no frame (not even a pong) for " + TimeSpan.FromMilliseconds(silent));
                    return;
                }
                if (silent >= interval && c.Established && Waiters.Now - Interlocked.Read(ref c.LastPingTicks) >= interval)
                {
                    Interlocked.Exchange(ref c.LastPingTicks, Waiters.Now);
                    var ping = new JObject { { "type", "ping" }, { "timestamp", 0 } };
                    var sent = Send(c, ping, CancellationToken.None).ContinueWith(t => { var ignored = t.Exception; });
                    GC.KeepAlive(sent);
                }
            }
        }

        /// <summary>Cut a connection the client gave up on (a dead link): its close is handled as a drop (1006).</summary>
        private void Cut(Connection c, string why)
        {
            c.CutReason = why;
            c.Transport.Abort();
        }

        /// <summary>On the socket thread, once per connection: fail its waiters, tell the game, resume if the code says so.</summary>
        private void OnClosed(Connection c, int code, string reason)
        {
            var established = c.Established;
            var reconnect = options.AutoReconnect && !stopped && CloseCodes.Reconnects(code) && established;
            // Claimed before the connection is cleared: a request in between waits for the loop instead of failing.
            var startLoop = reconnect && Interlocked.CompareExchange(ref reconnectLoop, 1, 0) == 0;
            lock (gate)
            {
                if (current == c)
                {
                    current = null;
                    if (opened.Task.IsCompleted)
                        opened = Waiters.Source<bool>();
                }
            }
            c.Gone.TrySetResult(true);
            c.Transport.Dispose();
            FailWaiters("connection closed (" + code + ")");
            var delay = reconnect ? backoff.Next() : TimeSpan.Zero;
            if (code == CloseCodes.Unauthorized)
                c.Hello.TrySetException(new GaiaAuthException("the gateway refused the token (4401): " + reason));
            else
                c.Hello.TrySetException(new GaiaConnectionException("closed before `connected`: " + code + " " + reason));
            if (!established && !startLoop && Volatile.Read(ref reconnectLoop) == 1 && code != CloseCodes.Unauthorized)
                return;  // a reconnect attempt that failed: its loop retries and the game heard of the drop already
            var info = new CloseInfo { Code = code, Reason = reason, WillReconnect = reconnect, RetryIn = delay };
            options.Dispatcher.Post(() =>
            {
                if (repairAskedAt >= 0)
                    repairLost = true;
                Raise(Closed, info);
            });
            if (code == CloseCodes.Unauthorized)
                options.Dispatcher.Post(() => Raise(AuthRequired, code));
            if (startLoop)
                Task.Run(() => ReconnectAfter(delay));
        }

        private async Task ReconnectAfter(TimeSpan delay)
        {
            try
            {
                while (!stopped)
                {
                    await Task.Delay(delay).ConfigureAwait(false);
                    if (stopped)
                        return;
                    try
                    {
                        await ConnectCore(false, CancellationToken.None).ConfigureAwait(false);
                        return;
                    }
                    catch (GaiaAuthException)
                    {
                        return;  // OnClosed raised AuthRequired
                    }
                    catch (Exception)
                    {
                        delay = backoff.Next();
                    }
                }
            }
            finally
            {
                Volatile.Write(ref reconnectLoop, 0);
            }
        }

        /// <summary><see cref="CloseAsync"/>: the close frame, then the gateway's close within RequestTimeout (else a cut).</summary>
        private async Task CloseCore(CancellationToken cancel)
        {
            stopped = true;
            var c = current;
            if (c == null || !c.Transport.IsOpen)
                return;
            try
            {
                await SendClose(c, cancel).ConfigureAwait(false);
                var deadline = Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds;
                await Waiters.Within(c.Gone.Task, deadline, cancel, "close").ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                c.Transport.Abort();  // the gateway did not answer the close: cut it
            }
            catch (Exception e) when (!(e is OperationCanceledException))
            {
                c.Transport.Abort();
            }
        }

        /// <summary><see cref="Dispose"/>: the close frame sent in the background; the socket cut if the gateway does not answer.</summary>
        private void StopWithoutBlocking()
        {
            stopped = true;
            var c = current;
            if (c == null)
                return;
            if (!c.Transport.IsOpen)
            {
                c.Transport.Abort();
                return;
            }
            SendClose(c, CancellationToken.None).ContinueWith(sent =>
            {
                if (sent.IsFaulted)
                    c.Transport.Abort();
                else
                    Task.Delay(options.RequestTimeout).ContinueWith(t => { if (current == c) c.Transport.Abort(); });
            });
        }

        /// <summary><see cref="Abort"/>: the socket cut as a lost network would; OnClosed resumes it.</summary>
        private void AbortCurrent()
        {
            var c = current;
            if (c != null)
                c.Transport.Abort();
        }
    }
}
