using System;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// Frames in: read on the socket thread, where answers go to their waiters and the resume cursor
    /// moves; then, on the dispatcher's thread in arrival order, applied to the local world (a gap
    /// repaired with one get_state) and raised as the game's events, whose exceptions are reported.
    /// </summary>
    public sealed partial class GaiaClient
    {
        private long receivedSeq = -1;   // the resume cursor, as read off the wire
        private long handledSeq = -1;    // the last seq handled on the dispatcher thread
        private long repairAskedAt = -1;   // dispatcher thread: when the last get_state for a gap went out (-1: none pending)
        private bool repairLost;            // dispatcher thread: a connection ended with a repair pending

        /// <summary>On the socket thread: one connection's frames until it ends, then its close (a cut is a drop, 1006).</summary>
        private async Task ReadLoop(Connection c)
        {
            try
            {
                while (true)
                {
                    var text = await c.Transport.ReceiveTextAsync(CancellationToken.None).ConfigureAwait(false);
                    if (text == null)
                        break;
                    Interlocked.Exchange(ref c.LastHeardTicks, Waiters.Now);
                    OnText(c, text);
                }
            }
            catch (Exception)
            {
                // A lost network surfaces as WebSocketException, an Abort() as OperationCanceledException
                // or ObjectDisposedException depending on the runtime: all of them are a drop (1006).
            }
            var code = c.CutReason == null ? c.Transport.CloseCode ?? CloseCodes.Abnormal : CloseCodes.Abnormal;
            OnClosed(c, code, c.CutReason ?? c.Transport.CloseReason);
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
                    AnswerPing(frame);
                    return;
                case "chat_done":
                    ChatEnded(id, frame);
                    break;
                case "area_of_interest":
                    SnapshotWaitersReceived();
                    break;
            }
            options.Dispatcher.Post(() => Handle(type, frame));
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
            SnapshotWaitersApplied();
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

        private static PresenceChange ToPresence(JObject frame)
        {
            return new PresenceChange { Event = (string)frame["event"], UserId = (string)frame["user_id"],
                                        AreaId = (string)frame["area_id"] };
        }

        /// <summary>Run the game's handlers one by one; one that throws is reported through HandlerFailed, the rest still run.</summary>
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
    }
}
