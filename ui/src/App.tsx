// The UI's frame: navigation and the three pages (members, instances, one member).

import { NavLink, Route, Routes } from 'react-router';
import { MembersPage } from './pages/MembersPage.js';
import { InstancesPage } from './pages/InstancesPage.js';
import { MemberRoute } from './pages/MemberPage.js';

/** The whole UI. */
export function App() {
  return (
    <div className="app">
      <header className="top">
        <span className="brand">Roost</span>
        <nav>
          <NavLink to="/" end>
            Members
          </NavLink>
          <NavLink to="/instances">Instances</NavLink>
        </nav>
      </header>
      <main>
        <Routes>
          <Route path="/" element={<MembersPage />} />
          <Route path="/instances" element={<InstancesPage />} />
          <Route path="/members/:name" element={<MemberRoute />} />
          <Route path="*" element={<p className="error">No such page. Pick one above.</p>} />
        </Routes>
      </main>
    </div>
  );
}
