using System.Collections.Generic;
using System.Linq;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>What applying a world_update did.</summary>
    public enum DeltaResult
    {
        Applied,
        AlreadyHad,   // its version is inside the snapshot we hold
        Gap,          // base_version is not ours: a fresh snapshot is needed (the client asks for it)
        NoSnapshot,
    }

    /// <summary>
    /// The player's copy of the world: an `area_of_interest` snapshot, kept current by applying each
    /// `world_update` whose base_version equals the local version, and the roster of who is where.
    /// </summary>
    public sealed class LocalWorld
    {
        private readonly Dictionary<string, string> roster = new Dictionary<string, string>();

        public JObject View { get; private set; }
        public long Version { get; private set; }
        public int Gaps { get; private set; }
        public int Snapshots { get; private set; }

        public LocalWorld()
        {
            Version = -1;
        }

        /// <summary>Who is present in the experience (self included) and the area each stands in.</summary>
        public IDictionary<string, string> Roster
        {
            get { return roster; }
        }

        public string CurrentArea
        {
            get { return View == null ? null : (string)View["player"]["current_area"]; }
        }

        public JArray Inventory
        {
            get { return View == null ? new JArray() : (JArray)View["player"]["inventory"]; }
        }

        /// <summary>The items lying in one spot of an area (empty if there is no such spot).</summary>
        public JArray ItemsAt(string areaId, string spotId)
        {
            var spot = View == null ? null : View.SelectToken("areas." + areaId + ".spots." + spotId) as JObject;
            return spot == null ? new JArray() : (JArray)spot["items"];
        }

        /// <summary>Replace everything with a snapshot.</summary>
        public void ApplySnapshot(JObject frame)
        {
            View = (JObject)frame.DeepClone();
            Version = (long)frame["snapshot_version"];
            Snapshots++;
            roster.Clear();
            var players = frame["players"] as JArray;
            if (players == null)
                return;
            foreach (var player in players)
                roster[(string)player["user_id"]] = (string)player["area_id"];
        }

        /// <summary>Apply one world_update if it is the next step of our chain.</summary>
        public DeltaResult ApplyUpdate(JObject update)
        {
            if (View == null)
                return DeltaResult.NoSnapshot;
            var after = (long)update["snapshot_version"];
            if (after <= Version)
                return DeltaResult.AlreadyHad;
            if ((long)update["base_version"] != Version)
            {
                Gaps++;
                return DeltaResult.Gap;
            }
            foreach (JObject change in (JArray)update["changes"])
                ApplyChange(change);
            Version = after;
            View["snapshot_version"] = after;
            return DeltaResult.Applied;
        }

        /// <summary>A join, leave or move of another player.</summary>
        public void ApplyPresence(PresenceChange change)
        {
            if (change.Event == "leave")
                roster.Remove(change.UserId);
            else
                roster[change.UserId] = change.AreaId;
        }

        /// <summary>Keep the roster's entry for this player in step with its own moves (which come as deltas).</summary>
        public void TrackSelf(string userId)
        {
            if (userId != null && CurrentArea != null)
                roster[userId] = CurrentArea;
        }

        private JArray Collection(JObject change)
        {
            var area = change["area_id"];
            if (area == null || area.Type == JTokenType.Null)
                return (string)change["path"] == "player.inventory" ? Inventory : null;
            var spot = View.SelectToken("areas." + (string)area + ".spots." + (string)change["spot_id"]) as JObject;
            return spot == null ? null : (JArray)spot["items"];
        }

        private void ApplyChange(JObject change)
        {
            var op = (string)change["operation"];
            var items = Collection(change);
            var instance = (string)change["instance_id"];
            if (op == "add" && items != null)
            {
                var item = change["item"] ?? change["value"];
                items.Add(item.DeepClone());
            }
            else if (op == "remove" && items != null)
            {
                foreach (var found in items.Where(i => (string)i["instance_id"] == instance).ToList())
                    found.Remove();
            }
            else if (op == "update" && instance != null && items != null)
            {
                for (int i = 0; i < items.Count; i++)
                    if ((string)items[i]["instance_id"] == instance)
                        items[i] = change["item"].DeepClone();
            }
            else if (op == "update")
            {
                SetPath((string)change["path"], change["value"]);
            }
        }

        private void SetPath(string path, JToken value)
        {
            var keys = path.Split('.');
            JObject target = View;
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
            target[keys[keys.Length - 1]] = value == null ? JValue.CreateNull() : value.DeepClone();
        }
    }
}
