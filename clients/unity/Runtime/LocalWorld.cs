using System;
using System.Collections.Generic;
using System.Collections.ObjectModel;
using System.Linq;
using System.Runtime.ExceptionServices;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>What applying a world_update did.</summary>
    public enum DeltaResult
    {
        /// <summary>It was the next step of the chain: the local world changed.</summary>
        Applied,
        /// <summary>Its version is inside the snapshot held: nothing to do.</summary>
        AlreadyHad,
        /// <summary>Its base_version is not ours: the client asks for a fresh snapshot.</summary>
        Gap,
        /// <summary>No snapshot yet: the one on its way carries this change.</summary>
        NoSnapshot,
        /// <summary>A change in it could not be applied (a shape this client does not know): treated as a gap.</summary>
        Failed,
    }

    /// <summary>
    /// The player's copy of the world, read-only for the game: an `area_of_interest` snapshot kept
    /// current by the client (each `world_update` whose base_version equals <see cref="Version"/>),
    /// and the roster of who is where. Changes only on the dispatcher's thread; its events too.
    /// Typed: areas with names and exits (<see cref="Area"/>, <see cref="Here"/>), NPCs and where each
    /// stands (<see cref="Npcs"/>), the environment (<see cref="Weather"/>, <see cref="TimeOfDay"/>), each
    /// with an event when a change moves it (<see cref="NpcMoved"/>, <see cref="EnvironmentChanged"/>,
    /// <see cref="CurrentAreaChanged"/>).
    /// </summary>
    /// <remarks>
    /// The client applies every frame itself. <see cref="ApplySnapshot"/>, <see cref="ApplyUpdate"/> and
    /// <see cref="ApplyPresence"/> are public for a game's tests: a fake <see cref="IGaiaClient"/> fills a
    /// <c>new LocalWorld()</c> with them and its events fire as they would in play. Never call them on a
    /// connected client's world. A handler that throws is reported through <see cref="GaiaClient.HandlerFailed"/>
    /// on a client's world; on a world of your own its exception comes out of the Apply call.
    /// </remarks>
    public sealed class LocalWorld
    {
        private static readonly IReadOnlyList<Item> None = new Item[0];
        private readonly Dictionary<string, string> roster = new Dictionary<string, string>();
        private readonly HashSet<string> touched = new HashSet<string>();
        private bool inventoryTouched;
        private bool rosterTouched;
        private JObject view;
        private Typed told;  // the NPCs, environment and area as of the last change applied whole: what the events said

        /// <summary>An empty world (version -1) until the first snapshot.</summary>
        public LocalWorld()
        {
            Version = -1;
            Roster = new ReadOnlyDictionary<string, string>(roster);
        }

        /// <summary>A snapshot replaced everything (after connect, a gap or get_state).</summary>
        public event Action<LocalWorld> Replaced;
        /// <summary>Something in one area changed (items, an NPC, a player arriving or leaving); the area's id.</summary>
        public event Action<string> AreaChanged;
        /// <summary>The player's inventory changed.</summary>
        public event Action<LocalWorld> InventoryChanged;
        /// <summary>Someone joined, left or moved (self included).</summary>
        public event Action<LocalWorld> RosterChanged;
        /// <summary>
        /// An NPC walked (or appeared, or left the world): raised once per NPC for each change a delta
        /// makes, and for each difference a later snapshot brings (not for the first snapshot: read
        /// <see cref="Npcs"/> on <see cref="Replaced"/>). After the AreaChanged of both areas.
        /// </summary>
        public event Action<NpcMove> NpcMoved;
        /// <summary>
        /// A value of the environment (`weather`, `time_of_day`) changed: raised as <see cref="NpcMoved"/> is,
        /// once per key, for deltas and for what a later snapshot changes.
        /// </summary>
        public event Action<EnvironmentChange> EnvironmentChanged;
        /// <summary>The player now stands in another area (its own `go`, or a snapshot that differs); as <see cref="NpcMoved"/> is.</summary>
        public event Action<AreaMove> CurrentAreaChanged;

        /// <summary>The raw `area_of_interest` JSON kept current; read it, never change it (use the typed members).</summary>
        public JObject View { get { return view; } }
        /// <summary>The world version held (-1 before the first snapshot).</summary>
        public long Version { get; private set; }
        /// <summary>How many deltas did not follow the chain (each one repaired by a snapshot).</summary>
        public int Gaps { get; private set; }
        /// <summary>How many deltas could not be applied (each one repaired by a snapshot).</summary>
        public int Failures { get; private set; }
        /// <summary>How many snapshots were applied.</summary>
        public int Snapshots { get; private set; }
        /// <summary>Who is present in the experience (self included) and the area each stands in; a live read-only view.</summary>
        public IReadOnlyDictionary<string, string> Roster { get; private set; }

        /// <summary>Where a handler's exception goes: the client's HandlerFailed; on a world of the game's own, out of the Apply call.</summary>
        internal Action<Exception> HandlerFailed = e => ExceptionDispatchInfo.Capture(e).Throw();

        /// <summary>The area the player stands in (null before the first snapshot).</summary>
        public string CurrentArea
        {
            get { return Text(Path(view, "player", "current_area")); }
        }

        /// <summary>The player's inventory.</summary>
        public IReadOnlyList<Item> Inventory
        {
            get { return Items(Path(view, "player", "inventory") as JArray); }
        }

        /// <summary>The ids of every area the snapshot lists (typed: <see cref="Area"/>).</summary>
        public IReadOnlyList<string> Areas
        {
            get { var areas = Path(view, "areas") as JObject; return areas == null ? new string[0] : areas.Properties().Select(p => p.Name).ToArray(); }
        }

        /// <summary>The ids of the spots of one area (empty for an unknown area).</summary>
        public IReadOnlyList<string> SpotsIn(string areaId)
        {
            var spots = Path(view, "areas", areaId, "spots") as JObject;
            return spots == null ? new string[0] : spots.Properties().Select(p => p.Name).ToArray();
        }

        /// <summary>The items lying in one spot of an area (empty for any unknown or odd id).</summary>
        public IReadOnlyList<Item> ItemsAt(string areaId, string spotId)
        {
            return Items(Path(view, "areas", areaId, "spots", spotId, "items") as JArray);
        }

        /// <summary>The players (self included) standing in one area, sorted.</summary>
        public IReadOnlyList<string> PlayersIn(string areaId)
        {
            return roster.Where(p => p.Value == areaId).Select(p => p.Key).OrderBy(u => u, StringComparer.Ordinal).ToArray();
        }

        /// <summary>The area an NPC stands in (null if unknown).</summary>
        public string NpcArea(string npcId)
        {
            return Text(Path(view, "npcs", npcId, "area_id"));
        }

        /// <summary>One value of the environment (`weather`, `time_of_day`), or null.</summary>
        public string Environment(string key)
        {
            return Text(Path(view, "environment", key));
        }

        /// <summary>One area, typed: name, description, exits, spots and their items (null for an unknown id).</summary>
        public AreaInfo Area(string areaId)
        {
            var area = Path(view, "areas", areaId) as JObject;
            return area == null ? null : new AreaInfo(areaId, area);
        }

        /// <summary>The area the player stands in, typed (null before the first snapshot): <c>Here.Name</c>, <c>Here.Exits</c>.</summary>
        public AreaInfo Here
        {
            get { return Area(CurrentArea); }
        }

        /// <summary>Every NPC of the world with where it stands, sorted by id.</summary>
        public IReadOnlyList<NpcInfo> Npcs
        {
            get
            {
                var npcs = Path(view, "npcs") as JObject;
                return npcs == null ? new NpcInfo[0]
                    : npcs.Properties().Where(p => p.Value is JObject).OrderBy(p => p.Name, StringComparer.Ordinal)
                          .Select(p => new NpcInfo(p.Name, (JObject)p.Value)).ToArray();
            }
        }

        /// <summary>One NPC (null for an unknown id).</summary>
        public NpcInfo Npc(string npcId)
        {
            var npc = Path(view, "npcs", npcId) as JObject;
            return npc == null ? null : new NpcInfo(npcId, npc);
        }

        /// <summary>The NPCs standing in one area, sorted by id.</summary>
        public IReadOnlyList<NpcInfo> NpcsIn(string areaId)
        {
            return Npcs.Where(n => n.AreaId == areaId).ToArray();
        }

        /// <summary>The weather (`clear`, `misty`, ...; null before the first snapshot or if the world has none).</summary>
        public string Weather
        {
            get { return Environment("weather"); }
        }

        /// <summary>The time of day (`dawn`, `day`, ...; null before the first snapshot or if the world has none).</summary>
        public string TimeOfDay
        {
            get { return Environment("time_of_day"); }
        }

        /// <summary>Every value of the environment by key (a copy, sorted by key).</summary>
        public IReadOnlyDictionary<string, string> EnvironmentValues
        {
            get { return Typed.Of(view).Environment; }
        }

        /// <summary>
        /// Replace everything with a snapshot (an `area_of_interest` frame). The client calls it; public for
        /// a game's tests (a fake client's world). Raises <see cref="Replaced"/>, every area's AreaChanged,
        /// InventoryChanged and RosterChanged, then what differs from the world held before (NpcMoved,
        /// EnvironmentChanged, CurrentAreaChanged; none for the first snapshot).
        /// </summary>
        public void ApplySnapshot(JObject frame)
        {
            var before = told;
            view = (JObject)frame.DeepClone();
            told = Typed.Of(view);
            Version = (long)frame["snapshot_version"];
            Snapshots++;
            roster.Clear();
            var players = frame["players"] as JArray;
            if (players != null)
                foreach (var player in players)
                    roster[(string)player["user_id"]] = (string)player["area_id"];
            Fire(Replaced, this);
            foreach (var area in Areas)
                Fire(AreaChanged, area);
            Fire(InventoryChanged, this);
            Fire(RosterChanged, this);
            if (before != null)
                RaiseDifferences(before, told);
        }

        /// <summary>
        /// Apply one `world_update` if it is the next step of the chain (see <see cref="DeltaResult"/>). The
        /// client calls it; public for a game's tests. <paramref name="self"/>, the player's user id, keeps the
        /// roster's own entry where <see cref="CurrentArea"/> is. Raises AreaChanged, InventoryChanged,
        /// RosterChanged, NpcMoved, EnvironmentChanged and CurrentAreaChanged for what it changed; nothing
        /// if it was not applied.
        /// </summary>
        public DeltaResult ApplyUpdate(JObject update, string self = null)
        {
            if (view == null)
                return DeltaResult.NoSnapshot;
            var after = (long)update["snapshot_version"];
            if (after <= Version)
                return DeltaResult.AlreadyHad;
            if ((long)update["base_version"] != Version)
            {
                Gaps++;
                return DeltaResult.Gap;
            }
            var before = told;
            try
            {
                foreach (JObject change in (JArray)update["changes"])
                    ApplyChange(change);
            }
            catch (Exception)
            {
                // Half applied: the view can no longer be trusted. Nothing more applies until a snapshot.
                Failures++;
                Version = -2;
                ClearTouched();
                return DeltaResult.Failed;
            }
            Version = after;
            view["snapshot_version"] = after;
            var here = CurrentArea;
            if (self != null && here != null)
                SetRoster(self, here);
            told = Typed.Of(view);
            RaiseTouched();
            RaiseDifferences(before, told);
            return DeltaResult.Applied;
        }

        /// <summary>A join, leave or move of a player (a `presence` frame). The client calls it; public for a game's tests.</summary>
        public void ApplyPresence(PresenceChange change)
        {
            if (change.Event == "leave")
            {
                string was;
                if (roster.TryGetValue(change.UserId, out was))
                {
                    roster.Remove(change.UserId);
                    touched.Add(was);
                    rosterTouched = true;
                }
            }
            else if (change.UserId != null && change.AreaId != null)
            {
                SetRoster(change.UserId, change.AreaId);
            }
            RaiseTouched();
        }

        /// <summary>Mark the world unusable until the next snapshot (a connection that ended while a repair was asked).</summary>
        internal bool Broken
        {
            get { return view != null && Version < 0; }
        }

        private void SetRoster(string userId, string areaId)
        {
            string was;
            if (roster.TryGetValue(userId, out was) && was == areaId)
                return;
            if (was != null)
                touched.Add(was);
            roster[userId] = areaId;
            touched.Add(areaId);
            rosterTouched = true;
        }

        private void RaiseTouched()
        {
            if (rosterTouched && view != null)
                view["players"] = new JArray(roster.OrderBy(p => p.Key, StringComparer.Ordinal)
                    .Select(p => new JObject { { "user_id", p.Key }, { "area_id", p.Value } }));
            var areas = touched.ToArray();
            var inventory = inventoryTouched;
            var players = rosterTouched;
            ClearTouched();
            foreach (var area in areas)
                Fire(AreaChanged, area);
            if (inventory)
                Fire(InventoryChanged, this);
            if (players)
                Fire(RosterChanged, this);
        }

        /// <summary>NpcMoved, EnvironmentChanged and CurrentAreaChanged for what differs between two readings of the world.</summary>
        private void RaiseDifferences(Typed before, Typed after)
        {
            foreach (var npc in before.NpcAreas.Keys.Union(after.NpcAreas.Keys).OrderBy(k => k, StringComparer.Ordinal).ToArray())
            {
                string from, to;
                before.NpcAreas.TryGetValue(npc, out from);
                after.NpcAreas.TryGetValue(npc, out to);
                if (from != to || before.NpcAreas.ContainsKey(npc) != after.NpcAreas.ContainsKey(npc))
                    Fire(NpcMoved, new NpcMove { NpcId = npc, From = from, To = to });
            }
            foreach (var key in before.Environment.Keys.Union(after.Environment.Keys).OrderBy(k => k, StringComparer.Ordinal).ToArray())
            {
                string was, now;
                before.Environment.TryGetValue(key, out was);
                after.Environment.TryGetValue(key, out now);
                if (was != now)
                    Fire(EnvironmentChanged, new EnvironmentChange { Key = key, Value = now, Previous = was });
            }
            if (before.CurrentArea != after.CurrentArea)
                Fire(CurrentAreaChanged, new AreaMove { From = before.CurrentArea, To = after.CurrentArea });
        }

        private void ClearTouched()
        {
            touched.Clear();
            inventoryTouched = false;
            rosterTouched = false;
        }

        private void ApplyChange(JObject change)
        {
            var op = (string)change["operation"];
            var path = (string)change["path"];
            var instance = (string)change["instance_id"];
            var area = Text(change["area_id"]);
            var spot = Text(change["spot_id"]);
            JArray items = null;
            if (area != null && spot != null)
            {
                items = (JArray)Path(view, "areas", area, "spots", spot, "items");
                touched.Add(area);
            }
            else if (path == "player.inventory")
            {
                items = (JArray)Path(view, "player", "inventory");
                inventoryTouched = true;
            }
            if (items != null && op == "add")
            {
                items.Add((change["item"] ?? change["value"]).DeepClone());
            }
            else if (items != null && op == "remove")
            {
                foreach (var found in items.Where(i => (string)i["instance_id"] == instance).ToList())
                    found.Remove();
            }
            else if (items != null && op == "update" && instance != null)
            {
                for (int i = 0; i < items.Count; i++)
                {
                    if ((string)items[i]["instance_id"] == instance)
                        items[i] = change["item"].DeepClone();
                }
            }
            else if (op == "update" && path != null)
            {
                SetPath(path, change["value"]);
            }
            else
            {
                throw new InvalidOperationException("a change this client cannot apply: " + change);
            }
        }

        private void SetPath(string path, JToken value)
        {
            var keys = path.Split('.');
            if (keys.Any(string.IsNullOrEmpty))
                throw new InvalidOperationException("a change with an empty key in its path: " + path);
            NoteArea(keys, value);
            JObject target = view;
            for (int i = 0; i < keys.Length - 1; i++)
            {
                var next = target[keys[i]] as JObject;
                if (next == null)
                {
                    next = new JObject();
                    target[keys[i]] = next;
                }
                target = next;
            }
            var old = Text(target[keys[keys.Length - 1]]);
            target[keys[keys.Length - 1]] = value == null ? JValue.CreateNull() : value.DeepClone();
            if (keys.Length == 3 && keys[0] == "npcs" && keys[2] == "area_id" && old != null)
                touched.Add(old);  // the NPC left that area
            if (path == "player.current_area" && old != null)
                touched.Add(old);
        }

        private void NoteArea(string[] keys, JToken value)
        {
            if (keys[0] == "areas" && keys.Length > 1)
                touched.Add(keys[1]);
            else if (keys[0] == "npcs" && keys.Length == 3 && keys[2] == "area_id")
                touched.Add(Text(value));
            else if (keys.Length == 2 && keys[0] == "player" && keys[1] == "current_area")
                touched.Add(Text(value));
            else if (keys.Length == 2 && keys[0] == "player" && keys[1] == "inventory")
                inventoryTouched = true;
            touched.Remove(null);
        }

        private void Fire<T>(Action<T> handler, T value)
        {
            if (handler == null)
                return;
            foreach (Action<T> one in handler.GetInvocationList())
            {
                try { one(value); }
                catch (Exception e) { HandlerFailed(e); }
            }
        }

        private static IReadOnlyList<Item> Items(JArray items)
        {
            return items == null ? None : items.OfType<JObject>().Select(i => new Item(i)).ToArray();
        }

        private static JToken Path(JToken root, params string[] keys)
        {
            var at = root;
            foreach (var key in keys)
            {
                var obj = at as JObject;
                if (obj == null || key == null)
                    return null;
                at = obj[key];
            }
            return at;
        }

        internal static string Text(JToken token)
        {
            return token == null || token.Type == JTokenType.Null ? null : token.ToString();
        }

        /// <summary>What the typed events compare: where each NPC stands, the environment, the player's area.</summary>
        private sealed class Typed
        {
            internal readonly Dictionary<string, string> NpcAreas = new Dictionary<string, string>();
            internal readonly IReadOnlyDictionary<string, string> Environment;
            internal string CurrentArea;

            private Typed(SortedDictionary<string, string> environment)
            {
                Environment = new ReadOnlyDictionary<string, string>(environment);
            }

            internal static Typed Of(JObject view)
            {
                var environment = new SortedDictionary<string, string>(StringComparer.Ordinal);
                var values = Path(view, "environment") as JObject;
                if (values != null)
                    foreach (var value in values.Properties())
                        if (value.Value.Type != JTokenType.Null)
                            environment[value.Name] = value.Value.ToString();
                var typed = new Typed(environment) { CurrentArea = Text(Path(view, "player", "current_area")) };
                var npcs = Path(view, "npcs") as JObject;
                if (npcs != null)
                    foreach (var npc in npcs.Properties())
                        typed.NpcAreas[npc.Name] = Text(Path(npc.Value, "area_id"));
                return typed;
            }
        }
    }
}
