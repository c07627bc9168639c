% rebase('base.tpl')
<div class="title-row">
  <h1>Jobs</h1>
  <a class="btn btn-primary" href="/jobs/new">New job</a>
</div>
<form class="filters" method="get" action="/jobs" data-testid="job-filter" role="search">
  <label class="grow">Search <input type="search" name="q" value="{{filters['q']}}" placeholder="id or description"></label>
  <label>State
    <select name="state">
      <option value="">any</option>
      % for name in h['job_states']:
      <option value="{{name}}" {{'selected' if filters['state'] == name else ''}}>{{name}}</option>
      % end
    </select>
  </label>
  <label>Source
    <select name="source">
      <option value="">any</option>
      % for name in ('yaml', 'api'):
      <option value="{{name}}" {{'selected' if filters['source'] == name else ''}}>{{name}}</option>
      % end
    </select>
  </label>
  <label>Kind
    <select name="kind">
      <option value="">any</option>
      % for name in ('python', 'command'):
      <option value="{{name}}" {{'selected' if filters['kind'] == name else ''}}>{{name}}</option>
      % end
    </select>
  </label>
  <label>Tag <input type="text" name="tag" value="{{filters['tag']}}" size="10"></label>
  <div class="filter-buttons">
    <button type="submit" class="btn">Filter</button>
    <a class="btn btn-quiet" href="/jobs">Clear</a>
  </div>
</form>
% if jobs:
<div class="table-wrap">
<table class="table jobs-table">
  <thead>
    <tr><th>Job</th><th>Kind</th><th>Trigger</th><th>State</th><th>Next run</th><th>Last run</th><th><span class="sr-only">Actions</span></th></tr>
  </thead>
  <tbody>
  % for job in jobs:
    <tr data-testid="job-row" data-job-id="{{job['id']}}">
      <td data-label="Job">
        <a href="/jobs/{{job['id']}}" class="job-id">{{job['id']}}</a>
        % if job.get('description'):
        <div class="muted small">{{job['description']}}</div>
        % end
        <div class="small"><span class="tag tag-source">{{job['source']}}</span>
        % for tag in job.get('tags') or []:
        <span class="tag">{{tag}}</span>
        % end
        </div>
      </td>
      <td data-label="Kind">{{job['kind']}}</td>
      <td data-label="Trigger" class="mono small">{{job.get('trigger_text', '')}}</td>
      <td data-label="State">
        % include('_badge.tpl', status=job['state'])
      </td>
      <td data-label="Next run">
        % if job.get('next_run_time'):
        <span title="{{h['time'](job['next_run_time'])}}">{{h['ago'](job['next_run_time'])}}</span>
        % else:
        <span class="muted">—</span>
        % end
      </td>
      <td data-label="Last run">
        % if job.get('last_run'):
        <a href="/runs/{{job['last_run']['id']}}" class="badge-link">
          % include('_badge.tpl', status=job['last_run']['status'])
        </a>
        % else:
        <span class="muted">never</span>
        % end
      </td>
      <td data-label="Actions">
        % include('_job_actions.tpl', job=job, next=here)
      </td>
    </tr>
  % end
  </tbody>
</table>
</div>
% include('_pager.tpl')
% else:
<p class="empty">No jobs match. <a href="/jobs">Show all jobs</a>.</p>
% end
