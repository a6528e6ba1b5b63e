using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>The frame side of the client: what the socket thread does, what the dispatcher does, and a drop.</summary>
    public sealed partial class GaiaClient
    {
        private readonly List<SnapshotWaiter> snapshotWaiters = new List<SnapshotWaiter>();
        private readonly ConcurrentDictionary<string, ChatCall> chats = new ConcurrentDictionary<string, ChatCall>();
        private long repairAskedAt = -1;   // dispatcher thread: when the last get_state for a gap went out (-1: none pending)
        private bool repairLost;            // dispatcher thread: a connection ended with a repair pending

        /// <summary>
        /// Say something in the player's own words: the gateway turns it into an action, the world
        /// change is applied, then the narrative streams as <see cref="ChatChunkReceived"/> (and
        /// <paramref name="onDelta"/>) on the dispatcher's thread; completes with `chat_done`.
        /// </summary>
        public async Task<ChatResult> ChatAsync(string message, string conversationId = null, Action<string> onDelta = null,
                                                CancellationToken cancel = default(CancellationToken))
        {
            var deadline = Waiters.Now + (long)options.ChatTimeout.TotalMilliseconds;
            var id = "c" + Interlocked.Increment(ref nextId);
            var frame = new JObject { { "type", "chat" }, { "id", id }, { "message", message } };
            if (conversationId != null)
                frame["conversation_id"] = conversationId;
            var call = new ChatCall(id, onDelta);
            try
            {
                await SendWhenOpen(frame, deadline, cancel, () => chats[id] = call).ConfigureAwait(false);
                await Waiters.Within(call.Received.Task, deadline, cancel, "chat_done").ConfigureAwait(false);
                return await Waiters.Cancellable(call.Done.Task, cancel).ConfigureAwait(false);
            }
            finally
            {
                ChatCall ignored;
                chats.TryRemove(id, out ignored);
            }
        }

        /// <summary>On the socket thread: answers to awaits and the cursor; everything else goes to the dispatcher.</summary>
        private void OnText(Connection c, string text)
        {
            JObject frame;
            try
            {
                frame = JObject.Parse(text);
            }
            catch (JsonException)
            {
                return;  // not JSON: nothing the protocol sends; skip it rather than drop the session
            }
            var type = (string)frame["type"];
            var seq = frame["seq"];
            if (seq != null && seq.Type == JTokenType.Integer)
                Interlocked.Exchange(ref receivedSeq, Math.Max(Interlocked.Read(ref receivedSeq), (long)seq));
            var id = frame["id"] == null ? null : frame["id"].ToString();
            switch (type)
            {
                case "connected":
                    OnConnected(c, frame);
                    break;
                case "action_response":
                    Answer(id, frame);
                    break;
                case "error":
                    if (!Answer(id, frame))
                        ChatEnded(id, frame);
                    break;
                case "pong":
                    TaskCompletionSource<JObject> pong;
                    var stamp = frame["timestamp"];
                    if (stamp != null && stamp.Type == JTokenType.Integer && pings.TryRemove((long)stamp, out pong))
                        pong.TrySetResult(frame);
                    return;
                case "chat_done":
                    ChatEnded(id, frame);
                    break;
                case "area_of_interest":
                    lock (snapshotWaiters)
                        foreach (var waiter in snapshotWaiters)
                            waiter.Received.TrySetResult(true);
                    break;
            }
            options.Dispatcher.Post(() => Handle(type, frame));
        }

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

        private bool Answer(string id, JObject frame)
        {
            TaskCompletionSource<JObject> waiter;
            if (id == null || !answers.TryRemove(id, out waiter))
                return false;
            waiter.TrySetResult(frame);
            return true;
        }

        private void ChatEnded(string id, JObject frame)
        {
            ChatCall call;
            if (id != null && chats.TryGetValue(id, out call))
                call.Received.TrySetResult(frame);
        }

        /// <summary>On the dispatcher thread, in arrival order.</summary>
        private void Handle(string type, JObject frame)
        {
            var seq = frame["seq"];
            if (seq != null && seq.Type == JTokenType.Integer)
            {
                if ((long)seq <= handledSeq)
                    return;  // already handled before a resume that started from an older cursor
                handledSeq = (long)seq;
            }
            switch (type)
            {
                case "connected":
                    Raise(Connected, frame);
                    break;
                case "area_of_interest":
                    OnSnapshot(frame);
                    break;
                case "world_update":
                    OnWorldUpdate(frame);
                    break;
                case "presence":
                    OnPresence(ToPresence(frame));
                    break;
                case "presence_batch":
                    foreach (var change in ((JArray)frame["changes"] ?? new JArray()).OfType<JObject>())
                        if ((string)change["user_id"] != UserId)
                            OnPresence(ToPresence(change));
                    break;
                case "resumed":
                    if (repairLost || World.Broken)
                        AskForState();  // the get_state a drop swallowed, asked again on the new connection
                    Raise(Resumed, new ResumeInfo { FromSeq = (long)frame["from_seq"], ToSeq = (long)frame["to_seq"],
                                                    Replayed = (int)frame["replayed"] });
                    break;
                case "resync_required":
                    Raise(ResyncRequired, (string)frame["reason"]);
                    break;
                case "chat_chunk":
                    OnChatChunk(frame);
                    break;
                case "chat_done":
                    OnChatDone(frame);
                    break;
                case "error":
                    var error = new GaiaError { Code = (string)frame["code"], Message = (string)frame["message"],
                                                Id = frame["id"] == null ? null : frame["id"].ToString() };
                    OnChatError(error);
                    Raise(ErrorReceived, error);
                    break;
            }
        }

        private void OnSnapshot(JObject frame)
        {
            World.ApplySnapshot(frame);
            repairAskedAt = -1;
            repairLost = false;
            Raise(SnapshotApplied, World);
            SnapshotWaiter[] waiting;
            lock (snapshotWaiters)
            {
                waiting = snapshotWaiters.ToArray();
                snapshotWaiters.Clear();
            }
            foreach (var waiter in waiting)
                waiter.Applied.TrySetResult(true);
        }

        private void OnWorldUpdate(JObject frame)
        {
            var result = World.ApplyUpdate(frame, UserId);
            if (result == DeltaResult.Gap || result == DeltaResult.Failed)
                AskForState();
            Raise(WorldUpdated, new WorldUpdate { Frame = frame, Result = result, Seq = frame["seq"] == null ? -1 : (long)frame["seq"],
                                                  ActorId = (string)frame["actor_id"] });
        }

        /// <summary>One get_state per hole; asked again if its snapshot has not come within RequestTimeout or its connection ended.</summary>
        private void AskForState()
        {
            if (repairAskedAt >= 0 && !repairLost && Waiters.Now - repairAskedAt < (long)options.RequestTimeout.TotalMilliseconds)
                return;
            var c = current;
            if (c == null || !c.Established)
            {
                repairLost = true;  // asked again once a connection resumes
                return;
            }
            repairAskedAt = Waiters.Now;
            repairLost = false;
            Send(c, new JObject { { "type", "get_state" } }, CancellationToken.None)
                .ContinueWith(t => { var ignored = t.Exception; });
        }

        private void OnPresence(PresenceChange change)
        {
            World.ApplyPresence(change);
            Raise(PresenceChanged, change);
        }

        private void OnChatChunk(JObject frame)
        {
            var chunk = new ChatChunk { Id = frame["id"] == null ? null : frame["id"].ToString(),
                                        ConversationId = (string)frame["conversation_id"], Delta = (string)frame["delta"] };
            ChatCall call;
            if (chunk.Id != null && chats.TryGetValue(chunk.Id, out call))
            {
                call.Text.Append(chunk.Delta);
                if (call.OnDelta != null)
                    Raise(call.OnDelta, chunk.Delta);
            }
            Raise(ChatChunkReceived, chunk);
        }

        private void OnChatDone(JObject frame)
        {
            ChatCall call;
            var id = frame["id"] == null ? null : frame["id"].ToString();
            if (id == null || !chats.TryGetValue(id, out call))
                return;
            call.Done.TrySetResult(new ChatResult {
                Id = id, ConversationId = (string)frame["conversation_id"], Action = (string)frame["action"],
                Success = frame["success"] != null && (bool)frame["success"], Narrator = (string)frame["narrator"],
                Reason = (string)frame["reason"], Text = call.Text.ToString(),
                TimeToFirstChunkMs = frame["time_to_first_chunk_ms"] == null ? 0 : (double)frame["time_to_first_chunk_ms"],
                TotalTimeMs = frame["total_time_ms"] == null ? 0 : (double)frame["total_time_ms"] });
        }

        private void OnChatError(GaiaError error)
        {
            ChatCall call;
            if (error.Id != null && chats.TryGetValue(error.Id, out call))
                call.Done.TrySetResult(new ChatResult { Id = error.Id, Success = false, Text = call.Text.ToString(), Error = error });
        }

        private static PresenceChange ToPresence(JObject frame)
        {
            return new PresenceChange { Event = (string)frame["event"], UserId = (string)frame["user_id"],
                                        AreaId = (string)frame["area_id"] };
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

        private void FailWaiters(string why)
        {
            foreach (var id in answers.Keys)
            {
                TaskCompletionSource<JObject> waiter;
                if (answers.TryRemove(id, out waiter))
                    waiter.TrySetException(new GaiaConnectionException(why + ": the request may or may not have been applied"));
            }
            foreach (var stamp in pings.Keys)
            {
                TaskCompletionSource<JObject> waiter;
                if (pings.TryRemove(stamp, out waiter))
                    waiter.TrySetException(new GaiaConnectionException(why));
            }
            foreach (var call in chats.Values)
                if (call.Received.TrySetException(new GaiaConnectionException(why + " during the chat")))
                    call.Done.TrySetCanceled();
            lock (snapshotWaiters)
            {
                foreach (var waiter in snapshotWaiters)
                    if (waiter.Received.TrySetException(new GaiaConnectionException(why + " before the snapshot")))
                        waiter.Applied.TrySetCanceled();
                snapshotWaiters.RemoveAll(w => w.Received.Task.IsFaulted);
            }
        }

        private void Raise<T>(Action<T> handler, T value)
        {
            if (handler == null)
                return;
            foreach (Action<T> one in handler.GetInvocationList())
            {
                try
                {
                    one(value);
                }
                catch (Exception e)
                {
                    ReportHandlerFailure(e);
                }
            }
        }

        private void ReportHandlerFailure(Exception failure)
        {
            var report = HandlerFailed;
            if (report == null)
                return;
            foreach (Action<Exception> one in report.GetInvocationList())
            {
                try { one(failure); }
                catch (Exception) { }  // a failing failure handler has nowhere left to go
            }
        }

        /// <summary>A get_state in flight: received on the socket thread, applied on the dispatcher's.</summary>
        private sealed class SnapshotWaiter
        {
            internal readonly TaskCompletionSource<bool> Received = Waiters.Source<bool>();
            internal readonly TaskCompletionSource<bool> Applied = Waiters.Source<bool>();
        }

        /// <summary>A chat in flight: its end received on the socket thread, its chunks and result on the dispatcher's.</summary>
        private sealed class ChatCall
        {
            internal readonly TaskCompletionSource<JObject> Received = Waiters.Source<JObject>();
            internal readonly TaskCompletionSource<ChatResult> Done = Waiters.Source<ChatResult>();
            internal readonly StringBuilder Text = new StringBuilder();
            internal readonly string Id;
            internal readonly Action<string> OnDelta;

            internal ChatCall(string id, Action<string> onDelta)
            {
                Id = id;
                OnDelta = onDelta;
            }
        }
    }
}
